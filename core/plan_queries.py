"""Run plans in the store: groups of runs with dependencies, released by the store itself.

A plan (the one-click demo, a size sweep) is created with all its runs in one transaction.
A run that depends on another (students on their teacher) starts ``waiting``; workers only
claim ``queued`` runs, so it cannot start early. When the parent ends, the same transaction
that records the parent's end settles its dependents:

- parent succeeded: they become ``queued``, and students and twins get the parent as their
  ``teacher_run_id``;
- parent failed, cancelled or interrupted: they end ``cancelled`` with a sentence naming
  the parent and its error, and so do their own dependents.

Because this happens inside the store, whichever process ends the parent (its worker, a
cancel from another tab, the process that finds its lease expired) settles the plan, and a
reload, a second tab or a server restart loses nothing. `requeue` resumes an interrupted
run, and puts back to ``waiting`` the runs that were ended only because of it.

`PlanQueries` is mixed into `core.store.Store`, like `core.leases.LeaseQueries`. The plan API
that pages call (the demo, sweeps, progress and ETA) is `core.plans`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core import paths
from core.db import Artifact, Dataset, EpochMetric, Latency, Parity, Plan, Result, Run
from core.enums import PlanKind, Role, Status, choice_list
from core.errors import ConfigError, StoreError
from core.outputs import remove_paths
from core.records import PlanRecord, PlanStep, RunRecord, fit_text, jsonable, to_record

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

# Every error of a run ended because of its parent starts so: `requeue` of the parent finds
# exactly these runs again (a run the user cancelled while it waited stays cancelled).
BLOCKED_PREFIX = "Not started: its "
# Roles that learn from, or are compared with, the run they wait for.
_TEACHER_LINKED = frozenset({Role.STUDENT, Role.BASELINE})
_ENDED_HOW = {
    Status.FAILED: "failed",
    Status.CANCELLED: "was cancelled",
    Status.INTERRUPTED: "was interrupted",
}


def blocked_reason(parent: Run, how: str) -> str:
    """Why a waiting run ended without starting: ``Not started: its teacher run #12 failed:
    ValueError: boom.`` The parent's own error is kept when it says more than ``how``."""
    kind = "teacher" if parent.role == Role.TEACHER else "parent"
    error = (parent.error or "").strip()
    if error.lower().startswith(f"{parent.status}: "):  # "interrupted: the process ..."
        error = error[len(parent.status) + 2 :]
    if parent.status == Status.CANCELLED and not error.startswith(BLOCKED_PREFIX):
        error = ""  # "cancelled by the user" only repeats "was cancelled"
    detail = f": {error.rstrip('.')}" if error else ""
    return f"{BLOCKED_PREFIX}{kind} run #{parent.id} {how}{detail}."


class PlanQueries:
    """Store methods for run plans (see the module docstring)."""

    if TYPE_CHECKING:

        def _unit(self, action: str, *, write: bool = False) -> AbstractContextManager[Session]: ...

        @staticmethod
        def _run_row(session: Session, run_id: int, *, lock: bool = False) -> Run: ...

        def _clock(self, session: Session) -> datetime: ...

    # ------------------------------------------------------------ plans
    def create_plan(
        self,
        name: str,
        kind: str,
        dataset_id: int,
        steps: Sequence[PlanStep],
        config: Mapping[str, Any] | None = None,
    ) -> tuple[PlanRecord, list[RunRecord]]:
        """Record a plan and all its runs at once (all or nothing); returns them in step order.

        A step that waits for an unfinished run starts ``waiting``; one whose parent has
        already succeeded is queued at once. A parent that does not exist (deleted), belongs
        to another dataset or has ended badly is refused with one sentence, and nothing is
        recorded.
        """
        if kind not in set(PlanKind):
            raise ConfigError(f"Unknown plan kind {kind!r}; use one of {choice_list(PlanKind)}.")
        if not steps:
            raise ConfigError("A plan needs at least one run.")
        for index, step in enumerate(steps):
            self._check_step(index, step, dataset_id)
        with self._unit("create the run plan", write=True) as session:
            if session.get(Dataset, dataset_id) is None:
                raise ConfigError(
                    f"Dataset {dataset_id} does not exist (it may have been deleted); "
                    "pick or upload another dataset."
                )
            plan = Plan(
                name=fit_text(name, 200),
                kind=kind,
                dataset_id=dataset_id,
                config=jsonable(dict(config or {})),
            )
            session.add(plan)
            session.flush()
            rows: list[Run] = []
            for step in steps:
                parent = self._parent_of(session, step, rows, dataset_id)
                rows.append(self._add_step(session, plan, step, parent))
            return to_record(PlanRecord, plan), [to_record(RunRecord, r) for r in rows]

    @staticmethod
    def _check_step(index: int, step: PlanStep, dataset_id: int) -> None:
        spec = step.spec
        if spec.role not in set(Role):
            raise ConfigError(f"Unknown run role {spec.role!r}; use one of {choice_list(Role)}.")
        if spec.dataset_id != dataset_id:
            raise ConfigError(
                f"Every run of a plan trains on its dataset ({dataset_id}); "
                f"run {spec.name or index + 1!r} names dataset {spec.dataset_id}."
            )
        if step.after is not None and not 0 <= step.after < index:
            raise ConfigError(
                f"Run {spec.name or index + 1!r} can only wait for an earlier run of its plan."
            )
        if step.after is not None and step.after_run is not None:
            raise ConfigError(f"Run {spec.name or index + 1!r} can wait for one run only.")

    def _parent_of(
        self, session: Session, step: PlanStep, rows: list[Run], dataset_id: int
    ) -> Run | None:
        if step.after is not None:
            return rows[step.after]
        if step.after_run is None:
            return None
        parent = session.scalars(
            select(Run).where(Run.id == step.after_run).with_for_update()
        ).one_or_none()
        if parent is None:
            raise ConfigError(
                f"Run #{step.after_run}, which this plan's runs were to wait for, no longer "
                "exists (it was deleted); pick another teacher. Nothing was queued."
            )
        if parent.dataset_id != dataset_id:
            raise ConfigError(
                f"Run #{parent.id} was trained on dataset {parent.dataset_id}, not "
                f"{dataset_id}; pick a teacher trained on the same dataset. Nothing was queued."
            )
        if parent.status in _ENDED_HOW:
            raise ConfigError(
                f"Run #{parent.id} {_ENDED_HOW[Status(parent.status)]}, so no run can learn "
                "from it; pick a teacher that has succeeded. Nothing was queued."
            )
        return parent

    @staticmethod
    def _add_step(session: Session, plan: Plan, step: PlanStep, parent: Run | None) -> Run:
        spec = step.spec
        try:
            config = jsonable(dict(spec.config))
        except TypeError as exc:
            raise ConfigError(f"The run configuration cannot be saved: {exc}.") from exc
        waits = parent is not None and parent.status != Status.SUCCEEDED
        teacher = spec.teacher_run_id
        if parent is not None and not waits and teacher is None and spec.role in _TEACHER_LINKED:
            teacher = parent.id
        if teacher is not None and session.get(Run, teacher) is None:
            raise ConfigError(f"Teacher run {teacher} does not exist; pick a finished teacher.")
        row = Run(
            dataset_id=plan.dataset_id,
            role=spec.role,
            model=spec.model,
            config=config,
            teacher_run_id=teacher,
            status=Status.WAITING if waits else Status.QUEUED,
            name=None if spec.name is None else fit_text(spec.name, 200),
            plan_id=plan.id,
            depends_on_run_id=None if parent is None else parent.id,
        )
        session.add(row)
        session.flush()
        return row

    def get_plan(self, plan_id: int) -> PlanRecord:
        with self._unit(f"read plan {plan_id}") as session:
            row = session.get(Plan, plan_id)
            if row is None:
                raise StoreError(f"Plan {plan_id} does not exist (it may have been deleted).")
            return to_record(PlanRecord, row)

    def list_plans(
        self, kind: str | None = None, dataset_id: int | None = None, limit: int | None = None
    ) -> list[PlanRecord]:
        """Plans matching the filters, newest first."""
        query = select(Plan).order_by(Plan.id.desc())
        if kind is not None:
            query = query.where(Plan.kind == kind)
        if dataset_id is not None:
            query = query.where(Plan.dataset_id == dataset_id)
        if limit is not None:
            query = query.limit(limit)
        with self._unit("list run plans") as session:
            return [to_record(PlanRecord, r) for r in session.scalars(query).all()]

    # ------------------------------------------------------------ dependents
    def _settle_dependents(self, session: Session, parent: Run) -> list[int]:
        """Release or end the runs waiting for ``parent``, which has just ended (in the
        caller's transaction). Returns the ids of the runs released to the queue."""
        released: list[int] = []
        ended = [parent]
        while ended:
            current = ended.pop()
            waiting = session.scalars(
                select(Run)
                .where(Run.depends_on_run_id == current.id, Run.status == Status.WAITING)
                .order_by(Run.id)
                .with_for_update()
            ).all()
            for row in waiting:
                if current.status == Status.SUCCEEDED:
                    row.status = Status.QUEUED
                    if row.teacher_run_id is None and row.role in _TEACHER_LINKED:
                        row.teacher_run_id = current.id
                    released.append(row.id)
                    continue
                how = _ENDED_HOW.get(Status(current.status), "was deleted")
                row.status = Status.CANCELLED
                row.error = blocked_reason(current, how)
                row.finished = self._clock(session)
                ended.append(row)
        return released

    def _end_dependents_of_deleted(self, session: Session, parent: Run) -> None:
        """A parent about to be deleted: its waiting runs end with a sentence saying so."""
        for row in session.scalars(
            select(Run)
            .where(Run.depends_on_run_id == parent.id, Run.status == Status.WAITING)
            .with_for_update()
        ).all():
            row.status = Status.CANCELLED
            kind = "teacher" if parent.role == Role.TEACHER else "parent"
            row.error = f"{BLOCKED_PREFIX}{kind} run #{parent.id} was deleted."
            row.finished = self._clock(session)
            self._settle_dependents(session, row)

    # ------------------------------------------------------------ resume
    def requeue(self, run_id: int) -> list[int]:
        """Resume an interrupted run: it is queued again from scratch (its epochs, results
        and files are removed), and the runs of its plan that ended only because it was
        interrupted wait for it again. Returns the ids put back (the run first).

        Anything but an interrupted run is refused with one sentence.
        """
        with self._unit(f"resume run {run_id}", write=True) as session:
            row = self._run_row(session, run_id, lock=True)
            if row.status != Status.INTERRUPTED:
                raise ConfigError(
                    f"Run #{run_id} is {row.status}; only an interrupted run can be resumed."
                )
            if row.role == Role.STUDENT and row.teacher_run_id is None:
                raise ConfigError(
                    f"Run #{run_id} cannot be resumed: its teacher run was deleted; train "
                    "a new student from another teacher."
                )
            files = self._reset(session, row)
            back = [row.id, *self._unwait(session, row)]
        remove_paths(files)
        return back

    @staticmethod
    def _reset(session: Session, row: Run) -> list[Path | None]:
        stored = session.scalars(select(Artifact.path).where(Artifact.run_id == row.id)).all()
        for table in (EpochMetric, Result, Latency, Parity, Artifact):
            session.execute(delete(table).where(table.run_id == row.id))
        files = [paths.from_stored(row.checkpoint_path), paths.from_stored(row.onnx_path)]
        files += [paths.from_stored(p) for p in stored] + [paths.run_dir(row.id)]
        row.status, row.error = Status.QUEUED, None
        row.started = row.finished = row.owner = row.heartbeat = row.lease_expires = None
        row.cancel_requested = row.settled = False
        row.progress = None
        row.num_params = row.checkpoint_path = row.onnx_path = None
        return files

    @staticmethod
    def _unwait(session: Session, parent: Run) -> list[int]:
        """The runs ended because of ``parent`` (and theirs) wait again."""
        back: list[int] = []
        pending = [parent.id]
        while pending:
            parent_id = pending.pop()
            rows = session.scalars(
                select(Run)
                .where(
                    Run.depends_on_run_id == parent_id,
                    Run.status == Status.CANCELLED,
                    Run.started.is_(None),
                    Run.error.startswith(BLOCKED_PREFIX, autoescape=True),
                )
                .order_by(Run.id)
                .with_for_update()
            ).all()
            for row in rows:
                row.status, row.error, row.finished = Status.WAITING, None, None
                back.append(row.id)
                pending.append(row.id)
        return back
