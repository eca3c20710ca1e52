"""The closed vocabularies of the product, defined once: run roles, statuses, methods, families.

Each is a ``StrEnum``, so a member compares equal to its plain string (``Role.TEACHER ==
"teacher"``) and is stored in the database, JSON and query strings as that string. The ORM's
check constraints, the CLI's choices, the forms and the pages all read these classes; nothing
else spells the lists out.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a run is for. Order: how runs are listed (teacher first, popularity last)."""

    TEACHER = "teacher"
    STUDENT = "student"  # distilled from a teacher
    BASELINE = "baseline"  # the student's no-teacher twin
    POPULARITY = "popularity"  # the always-shown popularity baseline


class Status(StrEnum):
    """Where a run is in its life: queued -> running -> one terminal status. A run of a plan
    (core.plans) may start as waiting, until its parent run succeeds (then it is queued) or
    ends otherwise (then it ends cancelled, never having run)."""

    QUEUED = "queued"
    WAITING = "waiting"  # for its parent run in a plan; never claimed by a worker
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its process died or restarted while it ran


ACTIVE_STATUSES = frozenset({Status.QUEUED, Status.WAITING, Status.RUNNING})
TERMINAL_STATUSES = frozenset(set(Status) - ACTIVE_STATUSES)


class PlanKind(StrEnum):
    """What a run plan is for: the one-click demo, a size sweep, or any other group."""

    DEMO = "demo"
    SWEEP = "sweep"
    CUSTOM = "custom"


class Method(StrEnum):
    """How a student learns from its teacher; ``none`` is the no-teacher twin."""

    NONE = "none"
    SOFT = "soft"
    HARD = "hard"
    COMBINED = "combined"
    RANKING = "ranking"
    LISTWISE = "listwise"


# The methods that use a teacher (what a user picks for a student).
DISTILL_METHODS = tuple(m for m in Method if m is not Method.NONE)


class Family(StrEnum):
    """Model families. Popularity is the baseline; the others are trainable."""

    POPULARITY = "popularity"
    MF = "mf"
    TWO_TOWER = "two_tower"
    SASREC = "sasrec"


# Families a user can train as a teacher or student (popularity is fitted, not chosen).
TRAINABLE_FAMILIES = (Family.SASREC, Family.TWO_TOWER, Family.MF)


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The plain string values of an enum, in definition order (for SQL and messages)."""
    return tuple(member.value for member in enum)


def choice_list(enum: type[StrEnum] | tuple[StrEnum, ...]) -> str:
    """``'a, b, c'``: the choices of an enum for a one-sentence error."""
    return ", ".join(str(member) for member in enum)
