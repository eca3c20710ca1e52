"""The plain frozen records of the run store, and the helpers that make values storable.

Everything that leaves `core.store` is one of these records (`RunRecord`, `DatasetRecord`,
...), built from an ORM row by `to_record` inside the store's unit of work, so no ORM row
or session ever escapes. `JobSpec` and `PlanStep` are the other direction: what to train, as
a job manager or a plan hands it to the store.

The helpers here (`jsonable`, `finite_or_none`, `fit_text`) are the one place that decides
how a Python value is stored: JSON-safe, NaN as null, text cut to its column's size.
"""

from __future__ import annotations

import copy
import math
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from core import paths
from core.enums import ACTIVE_STATUSES, TERMINAL_STATUSES


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class DatasetRecord:
    id: int
    name: str
    source: str
    content_hash: str
    stats: dict[str, Any]
    n_users: int
    n_items: int
    n_interactions: int
    split: dict[str, Any]
    parquet_path: Path | None
    created: datetime


@dataclass(frozen=True)
class RunRecord:
    id: int
    dataset_id: int
    role: str
    model: str
    config: dict[str, Any]
    status: str
    name: str | None
    teacher_run_id: int | None
    error: str | None
    notes: str | None
    created: datetime
    started: datetime | None
    finished: datetime | None
    num_params: int | None
    checkpoint_path: Path | None
    onnx_path: Path | None
    tags: tuple[str, ...]
    # Work sharing (see core.leases): who runs it, until when, and what it reported last.
    owner: str | None = None
    heartbeat: datetime | None = None
    lease_expires: datetime | None = None
    cancel_requested: bool = False
    progress: dict[str, Any] = field(default_factory=dict)
    # Run plans (see core.plans): the plan it belongs to and the run it waits for.
    plan_id: int | None = None
    depends_on_run_id: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def label(self) -> str:
        """A short human name, e.g. ``#4 student sasrec`` or the user's own name."""
        return self.name or f"#{self.id} {self.role} {self.model}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished or datetime.now(UTC)
        return (end - self.started).total_seconds()


@dataclass(frozen=True)
class PlanRecord:
    """A named group of runs with dependencies (see core.plans)."""

    id: int
    name: str
    kind: str
    dataset_id: int
    config: dict[str, Any]
    created: datetime


@dataclass(frozen=True)
class EpochRecord:
    run_id: int
    epoch: int
    loss: float | None
    terms: dict[str, Any]
    val_ndcg: float | None
    val_recall: float | None
    val: dict[str, Any]
    seconds: float
    created: datetime


@dataclass(frozen=True)
class ResultRecord:
    run_id: int
    split: str
    metric: str
    k: int
    value: float | None

    @property
    def key(self) -> str:
        return metric_key(self.metric, self.k)


@dataclass(frozen=True)
class LatencyRecord:
    id: int
    run_id: int
    runtime: str
    batch: int
    p50: float
    p95: float
    p99: float
    qps: float
    threads: int | None
    env: dict[str, Any]
    created: datetime


@dataclass(frozen=True)
class ParityRecord:
    id: int
    run_id: int
    max_abs_diff: float
    topk_agreement: float
    n_users: int
    created: datetime


@dataclass(frozen=True)
class ArtifactRecord:
    id: int
    run_id: int
    kind: str
    path: Path
    bytes: int
    sha256: str
    created: datetime


def metric_key(metric: str, k: int) -> str:
    """``ndcg@10`` for a cut-off metric, just ``coverage`` when ``k`` is 0."""
    return f"{metric}@{k}" if k else metric


def parse_metric_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`metric_key`: ``"ndcg@10"`` -> ``("ndcg", 10)``."""
    metric, sep, k = key.rpartition("@")
    if sep and k.isdigit():
        return metric, int(k)
    return key, 0


# --------------------------------------------------------------------------- helpers
def _aware(value: datetime | None) -> datetime | None:
    # Everything stored is UTC: SQLite hands back naive datetimes, PostgreSQL ones in the
    # session's time zone.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def jsonable(value: Any) -> Any:
    """A JSON-safe deep copy: numpy scalars unwrapped, non-finite floats as None.

    PostgreSQL rejects NaN inside JSON, and a NaN loss term is exactly what a diverged run
    reports, so it is stored as null.
    """
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return jsonable(value.item())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fit_text(text: str, limit: int) -> str:
    """User text made storable: no control characters (PostgreSQL refuses NUL in text) and
    at most ``limit`` characters (the column's size, which PostgreSQL enforces)."""
    text = "".join(ch for ch in str(text) if unicodedata.category(ch) != "Cc")
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def finite_or_none(value: float | None) -> float | None:
    """``float(value)`` when it is a finite number, else None (how the store keeps NaN/inf)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pick_metric(val: Mapping[str, Any], name: str) -> float | None:
    """The headline value of a validation metric: ``name@10``, else ``name``, else any K."""
    for key in (f"{name}@10", name):
        if key in val:
            return finite_or_none(val[key])
    for key in sorted(val):
        if key.startswith(f"{name}@"):
            return finite_or_none(val[key])
    return None


Record = TypeVar("Record")

# Fields whose stored form differs from the record's; every other field is copied (dicts
# and lists deeply, so a record never aliases ORM state; datetimes as aware UTC).
_ADAPTERS: dict[type, dict[str, Callable[[Any], Any]]] = {
    DatasetRecord: {"parquet_path": paths.from_stored},
    RunRecord: {
        "checkpoint_path": paths.from_stored,
        "onnx_path": paths.from_stored,
        "tags": lambda tags: tuple(t.tag for t in tags),
        "progress": lambda progress: copy.deepcopy(progress or {}),
    },
    ArtifactRecord: {"path": paths.from_stored},
}


def to_record(cls: type[Record], row: Any) -> Record:
    """The frozen record ``cls`` built from an ORM row, field by field of the record."""
    adapters = _ADAPTERS.get(cls, {})
    values = {}
    for spec in fields(cls):  # type: ignore[arg-type]
        value = getattr(row, spec.name)
        if spec.name in adapters:
            value = adapters[spec.name](value)
        elif isinstance(value, datetime):
            value = _aware(value)
        elif isinstance(value, dict | list):
            value = copy.deepcopy(value)
        values[spec.name] = value
    return cls(**values)


# --------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class JobSpec:
    """What to train. ``config`` holds the model, training and distillation settings."""

    dataset_id: int
    role: str
    model: str
    config: dict[str, Any] = field(default_factory=dict)
    teacher_run_id: int | None = None
    name: str | None = None

    @classmethod
    def of(cls, run: RunRecord) -> JobSpec:
        """The spec of a stored run (a worker rebuilds it from the row it claimed)."""
        return cls(run.dataset_id, run.role, run.model, run.config, run.teacher_run_id, run.name)


@dataclass(frozen=True)
class PlanStep:
    """One run of a plan: what to train and, optionally, the run it waits for.

    ``after`` is the index of an earlier step of the same plan (students after the plan's
    teacher); ``after_run`` an existing run (a sweep's students after a teacher trained
    before). The run starts ``waiting`` and is queued when that run succeeds; when it is
    already finished, the run is queued at once.
    """

    spec: JobSpec
    after: int | None = None
    after_run: int | None = None
