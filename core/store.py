"""The run store: datasets, runs, their metrics and files, in one SQL database.

`Store` is the only place that opens database sessions. Each public method is one unit of
work (a session that commits or rolls back), so one `Store` can be shared by every thread
of the server; what comes out are plain frozen records (`RunRecord`, ...), never ORM rows.
Database failures surface as `core.errors.StoreError` with a readable sentence.

The URL comes from ``DISTILLERY_DB_URL`` (default: a SQLite file in the data directory).
SQLite gets WAL, foreign keys and a busy timeout on every connection, and write units of
work take the write lock up front (``BEGIN IMMEDIATE``) so that concurrent writers wait
for each other instead of failing with "database is locked". Nothing else here is SQLite
specific, so a PostgreSQL URL works as well. The schema is created and upgraded by the
Alembic migrations in ``migrations/`` when a `Store` is opened.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from core import paths
from core.db import (
    RUN_ROLES,
    RUN_STATUSES,
    Artifact,
    Dataset,
    EpochMetric,
    Latency,
    Parity,
    Result,
    Run,
    Tag,
    utcnow,
)
from core.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

DB_URL_ENV = "DISTILLERY_DB_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_S = 10.0

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
ACTIVE_STATUSES = frozenset({"queued", "running"})
# Terminal states have no way out: a finished run's record is final.
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "interrupted"}),
    "running": frozenset({"succeeded", "failed", "cancelled", "interrupted"}),
}

# Connections created through the write engine carry this execution option; the SQLite
# "begin" hook turns it into BEGIN IMMEDIATE.
_WRITE_OPTION = "distillery_write"
# Alembic's `context` is a module-level proxy: two migrations must never run at once.
_MIGRATION_LOCK = threading.Lock()
# Query parameters of a database URL whose values are credentials.
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)


# --------------------------------------------------------------------------- engine
def database_url() -> str:
    """The configured database URL: ``DISTILLERY_DB_URL`` or the default SQLite file."""
    url = os.environ.get(DB_URL_ENV, "").strip()
    return url or f"sqlite:///{paths.default_db_path()}"


def redacted_url(url: str | None = None) -> str:
    """The URL with its password masked: the only form that may be logged or shown."""
    try:
        parsed = make_url(url or database_url())
        # libpq and most drivers also take the password as a query parameter
        # (``postgresql://host/db?password=...``), which hide_password does not cover.
        secret = {k: "***" for k in parsed.query if _SECRET_PARAM.search(k)}
        if secret:
            parsed = parsed.update_query_dict(secret)
        return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except Exception:  # an unparseable URL may still contain a password; show nothing
        return "<unparseable database URL>"


def _is_memory_sqlite(database: str | None) -> bool:
    return not database or database == ":memory:" or database.startswith("file::memory:")


def make_engine(url: str) -> Engine:
    """An engine with a connection pool; SQLite connections get the pragmas they need."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)

    in_memory = _is_memory_sqlite(parsed.database)
    if in_memory:
        # One shared connection, or every pool checkout would see a new empty database.
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let the "begin" hook below emit BEGIN: pysqlite's own implicit transactions
        # start too late (at the first write) to take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes cannot wait for a concurrent
        # writer (SQLite answers "database is locked" at once); IMMEDIATE waits up to
        # busy_timeout instead.
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    """The newest schema revision this code knows."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


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
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


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


def _fit(text: str, limit: int) -> str:
    """User text made storable: no control characters (PostgreSQL refuses NUL in text) and
    at most ``limit`` characters (the column's size, which PostgreSQL enforces)."""
    text = "".join(ch for ch in str(text) if unicodedata.category(ch) != "Cc")
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _describe(exc: SQLAlchemyError) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig).strip() or type(exc.orig).__name__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _remove_paths(candidates: Iterable[Path | None]) -> None:
    """Delete files and folders, but only those inside the data directory."""
    for path in candidates:
        if path is None or not paths.is_inside_data_dir(path):
            continue
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:  # a file we cannot delete must not undo the DB delete
            log.warning("could not remove %s: %s", path, exc)


def _pick(val: Mapping[str, Any], name: str) -> float | None:
    """The headline value of a validation metric: ``name@10``, else ``name``, else any K."""
    for key in (f"{name}@10", name):
        if key in val:
            return _finite(val[key])
    for key in sorted(val):
        if key.startswith(f"{name}@"):
            return _finite(val[key])
    return None


def _dataset_record(row: Dataset) -> DatasetRecord:
    return DatasetRecord(
        id=row.id,
        name=row.name,
        source=row.source,
        content_hash=row.content_hash,
        stats=dict(row.stats or {}),
        n_users=row.n_users,
        n_items=row.n_items,
        n_interactions=row.n_interactions,
        split=dict(row.split or {}),
        parquet_path=paths.from_stored(row.parquet_path),
        created=_aware(row.created),
    )


def _run_record(row: Run) -> RunRecord:
    return RunRecord(
        id=row.id,
        dataset_id=row.dataset_id,
        role=row.role,
        model=row.model,
        config=json.loads(json.dumps(row.config or {})),
        status=row.status,
        name=row.name,
        teacher_run_id=row.teacher_run_id,
        error=row.error,
        notes=row.notes,
        created=_aware(row.created),
        started=_aware(row.started),
        finished=_aware(row.finished),
        num_params=row.num_params,
        checkpoint_path=paths.from_stored(row.checkpoint_path),
        onnx_path=paths.from_stored(row.onnx_path),
        tags=tuple(t.tag for t in row.tags),
    )


def _epoch_record(row: EpochMetric) -> EpochRecord:
    return EpochRecord(
        run_id=row.run_id,
        epoch=row.epoch,
        loss=row.loss,
        terms=dict(row.terms or {}),
        val_ndcg=row.val_ndcg,
        val_recall=row.val_recall,
        val=dict(row.val or {}),
        seconds=row.seconds,
        created=_aware(row.created),
    )


def _result_record(row: Result) -> ResultRecord:
    return ResultRecord(row.run_id, row.split, row.metric, row.k, row.value)


def _latency_record(row: Latency) -> LatencyRecord:
    return LatencyRecord(
        id=row.id,
        run_id=row.run_id,
        runtime=row.runtime,
        batch=row.batch,
        p50=row.p50,
        p95=row.p95,
        p99=row.p99,
        qps=row.qps,
        threads=row.threads,
        env=dict(row.env or {}),
        created=_aware(row.created),
    )


def _parity_record(row: Parity) -> ParityRecord:
    return ParityRecord(
        id=row.id,
        run_id=row.run_id,
        max_abs_diff=row.max_abs_diff,
        topk_agreement=row.topk_agreement,
        n_users=row.n_users,
        created=_aware(row.created),
    )


def _artifact_record(row: Artifact) -> ArtifactRecord:
    return ArtifactRecord(
        id=row.id,
        run_id=row.run_id,
        kind=row.kind,
        path=paths.from_stored(row.path),
        bytes=row.bytes,
        sha256=row.sha256,
        created=_aware(row.created),
    )


_UNSET: Any = object()


# --------------------------------------------------------------------------- store
class Store:
    """Thread-safe access to the run store; every method is one committed unit of work."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self._url = url or database_url()
        try:
            self._engine = make_engine(self._url)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(
                f"The database URL {redacted_url(self._url)} cannot be used ({reason}); "
                f"fix {DB_URL_ENV}."
            ) from exc
        self._write_engine = self._engine.execution_options(**{_WRITE_OPTION: True})
        self._reader = sessionmaker(self._engine, expire_on_commit=False)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        if migrate:
            try:
                self.upgrade()
            except BaseException:
                self._engine.dispose()
                raise

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return redacted_url(self._url)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None for an empty database)."""
        with self._unit("read the schema version") as session:
            return MigrationContext.configure(session.connection()).get_current_revision()

    def upgrade(self) -> str | None:
        """Create or upgrade the schema to the newest revision; returns that revision."""
        config = _alembic_config()
        script = ScriptDirectory.from_config(config)
        head = script.get_current_head()
        known = {s.revision for s in script.walk_revisions()}
        try:
            with _MIGRATION_LOCK, self._write_engine.begin() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
                if current == head:
                    return head
                if current is not None and current not in known:
                    raise StoreError(
                        f"The database {self.url} has schema revision {current}, which this "
                        "version of Distillery does not know; upgrade Distillery or set "
                        f"{DB_URL_ENV} to another database."
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise StoreError(
                f"The database {self.url} could not be created or upgraded "
                f"({_describe(exc)}); check {DB_URL_ENV} and that the disk is writable."
            ) from exc
        log.info("run store %s migrated from %s to %s", self.url, current, head)
        return head

    @contextmanager
    def _unit(self, action: str, *, write: bool = False) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error.

        ``action`` completes the sentence "The run store could not ..." in errors.
        """
        session = (self._writer if write else self._reader)()
        try:
            yield session
            if write:
                session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise StoreError(
                f"The run store could not {action} ({_describe(exc)}); please try again."
            ) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @staticmethod
    def _run_row(session: Session, run_id: int, *, lock: bool = False) -> Run:
        query = select(Run).where(Run.id == run_id)
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            raise StoreError(f"Run {run_id} does not exist (it may have been deleted).")
        return row

    # ------------------------------------------------------------ datasets
    def add_dataset(
        self,
        *,
        name: str,
        source: str,
        content_hash: str,
        n_users: int,
        n_items: int,
        n_interactions: int,
        stats: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        parquet_path: str | os.PathLike[str] | None = None,
    ) -> DatasetRecord:
        """Record a dataset; one with the same content hash is returned as it is."""
        name, source = _fit(name, 200), _fit(source, 500)
        existing = self.find_dataset(content_hash)
        if existing is not None:
            return existing
        try:
            with self._unit(f"save the dataset {name!r}", write=True) as session:
                row = session.scalars(
                    select(Dataset).where(Dataset.content_hash == content_hash)
                ).one_or_none()
                if row is None:
                    row = Dataset(
                        name=name,
                        source=source,
                        content_hash=content_hash,
                        stats=jsonable(dict(stats or {})),
                        n_users=int(n_users),
                        n_items=int(n_items),
                        n_interactions=int(n_interactions),
                        split=jsonable(dict(split or {})),
                        parquet_path=None
                        if parquet_path is None
                        else paths.to_stored(parquet_path),
                    )
                    session.add(row)
                    session.flush()
                return _dataset_record(row)
        except StoreError as exc:
            # Another process inserted the same hash between our check and our insert.
            if isinstance(exc.__cause__, IntegrityError):
                found = self.find_dataset(content_hash)
                if found is not None:
                    return found
            raise

    def find_dataset(self, content_hash: str) -> DatasetRecord | None:
        with self._unit("look up a dataset") as session:
            row = session.scalars(
                select(Dataset).where(Dataset.content_hash == content_hash)
            ).one_or_none()
            return None if row is None else _dataset_record(row)

    def get_dataset(self, dataset_id: int) -> DatasetRecord:
        with self._unit(f"read dataset {dataset_id}") as session:
            row = session.get(Dataset, dataset_id)
            if row is None:
                raise StoreError(f"Dataset {dataset_id} does not exist (it may have been deleted).")
            return _dataset_record(row)

    def list_datasets(self) -> list[DatasetRecord]:
        with self._unit("list datasets") as session:
            rows = session.scalars(select(Dataset).order_by(Dataset.id)).all()
            return [_dataset_record(r) for r in rows]

    def delete_dataset(self, dataset_id: int) -> None:
        """Delete a dataset, all its runs, and their files inside the data directory."""
        with self._unit(f"delete dataset {dataset_id}", write=True) as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:
                raise StoreError(f"Dataset {dataset_id} does not exist (it may have been deleted).")
            runs = session.scalars(select(Run).where(Run.dataset_id == dataset_id)).all()
            busy = [r.id for r in runs if r.status in ACTIVE_STATUSES]
            if busy:
                raise StoreError(
                    f"Dataset {dataset_id} still has queued or running runs ({_ids(busy)}); "
                    "cancel them first."
                )
            files = [paths.from_stored(dataset.parquet_path)]
            for run in runs:
                files += self._run_files(session, run)
            session.execute(delete(Dataset).where(Dataset.id == dataset_id))
        _remove_paths(files)

    # ------------------------------------------------------------ runs
    def create_run(
        self,
        dataset_id: int,
        role: str,
        model: str,
        config: Mapping[str, Any],
        teacher_run_id: int | None = None,
        status: str = "queued",
        name: str | None = None,
    ) -> RunRecord:
        """Record a new run. Its config is stored once and can never be changed."""
        if role not in RUN_ROLES:
            raise ConfigError(f"Unknown run role {role!r}; use one of {', '.join(RUN_ROLES)}.")
        if status not in RUN_STATUSES:
            raise ConfigError(
                f"Unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}."
            )
        try:
            stored_config = jsonable(dict(config))
        except TypeError as exc:
            raise ConfigError(f"The run configuration cannot be saved: {exc}.") from exc
        now = utcnow()
        with self._unit("create the run", write=True) as session:
            if session.get(Dataset, dataset_id) is None:
                raise StoreError(f"Dataset {dataset_id} does not exist (it may have been deleted).")
            if teacher_run_id is not None:
                self._run_row(session, teacher_run_id)
            row = Run(
                dataset_id=dataset_id,
                role=role,
                model=model,
                config=stored_config,
                teacher_run_id=teacher_run_id,
                status=status,
                name=None if name is None else _fit(name, 200),
                created=now,
                started=now if status != "queued" else None,
                finished=now if status in TERMINAL_STATUSES else None,
            )
            session.add(row)
            session.flush()
            return _run_record(row)

    def get_run(self, run_id: int) -> RunRecord:
        with self._unit(f"read run {run_id}") as session:
            return _run_record(self._run_row(session, run_id))

    def list_runs(
        self,
        dataset_id: int | None = None,
        role: str | Iterable[str] | None = None,
        status: str | Iterable[str] | None = None,
        teacher_run_id: int | None = None,
        tag: str | None = None,
    ) -> list[RunRecord]:
        """Runs matching every given filter, oldest first."""
        query = select(Run).order_by(Run.id)
        if dataset_id is not None:
            query = query.where(Run.dataset_id == dataset_id)
        if role is not None:
            query = query.where(Run.role.in_([role] if isinstance(role, str) else list(role)))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            query = query.where(Run.status.in_(statuses))
        if teacher_run_id is not None:
            query = query.where(Run.teacher_run_id == teacher_run_id)
        if tag is not None:
            query = query.where(Run.id.in_(select(Tag.run_id).where(Tag.tag == tag)))
        with self._unit("list runs") as session:
            return [_run_record(r) for r in session.scalars(query).all()]

    def set_status(self, run_id: int, status: str, error: str | None = None) -> RunRecord:
        """Move a run to ``status``; illegal transitions (e.g. out of a terminal state) raise.

        ``started`` is set on entering ``running``, ``finished`` on entering a terminal state.
        """
        if status not in RUN_STATUSES:
            raise StoreError(
                f"Unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}."
            )
        with self._unit(f"update the status of run {run_id}", write=True) as session:
            row = self._run_row(session, run_id, lock=True)
            if status not in TRANSITIONS.get(row.status, frozenset()):
                raise StoreError(
                    f"Run {run_id} cannot go from {row.status} to {status}"
                    + (" (it has already finished)." if row.status in TERMINAL_STATUSES else ".")
                )
            now = utcnow()
            row.status = status
            if status == "running":
                row.started = now
            if status in TERMINAL_STATUSES:
                row.finished = now
            if error is not None:
                row.error = error
            session.flush()
            return _run_record(row)

    def update_run(
        self,
        run_id: int,
        *,
        num_params: int | None = _UNSET,
        checkpoint_path: str | os.PathLike[str] | None = _UNSET,
        onnx_path: str | os.PathLike[str] | None = _UNSET,
    ) -> RunRecord:
        """Set the outputs of a run (only the arguments given; None clears a path)."""
        with self._unit(f"update run {run_id}", write=True) as session:
            row = self._run_row(session, run_id)
            if num_params is not _UNSET:
                row.num_params = None if num_params is None else int(num_params)
            if checkpoint_path is not _UNSET:
                row.checkpoint_path = (
                    None if checkpoint_path is None else paths.to_stored(checkpoint_path)
                )
            if onnx_path is not _UNSET:
                row.onnx_path = None if onnx_path is None else paths.to_stored(onnx_path)
            session.flush()
            return _run_record(row)

    def set_notes(self, run_id: int, notes: str | None) -> RunRecord:
        with self._unit(f"save the notes of run {run_id}", write=True) as session:
            row = self._run_row(session, run_id)
            row.notes = notes or None
            session.flush()
            return _run_record(row)

    def add_tag(self, run_id: int, tag: str) -> None:
        tag = tag.strip()
        if not tag:
            raise ConfigError("A tag cannot be empty.")
        with self._unit(f"tag run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            if session.get(Tag, (run_id, tag)) is None:
                session.add(Tag(run_id=run_id, tag=tag))

    def remove_tag(self, run_id: int, tag: str) -> None:
        with self._unit(f"untag run {run_id}", write=True) as session:
            session.execute(delete(Tag).where(Tag.run_id == run_id, Tag.tag == tag.strip()))

    def tags(self, run_id: int) -> list[str]:
        with self._unit(f"read the tags of run {run_id}") as session:
            return list(
                session.scalars(select(Tag.tag).where(Tag.run_id == run_id).order_by(Tag.tag))
            )

    def delete_run(self, run_id: int) -> None:
        """Delete a run, its metrics and its files (only those inside the data directory)."""
        with self._unit(f"delete run {run_id}", write=True) as session:
            row = self._run_row(session, run_id)
            if row.status in ACTIVE_STATUSES:
                raise StoreError(f"Run {run_id} is still {row.status}; cancel it first.")
            files = self._run_files(session, row)
            session.execute(delete(Run).where(Run.id == run_id))
        _remove_paths(files)

    @staticmethod
    def _run_files(session: Session, row: Run) -> list[Path | None]:
        stored = session.scalars(select(Artifact.path).where(Artifact.run_id == row.id)).all()
        return [
            paths.from_stored(row.checkpoint_path),
            paths.from_stored(row.onnx_path),
            *(paths.from_stored(p) for p in stored),
            paths.run_dir(row.id),
        ]

    def mark_interrupted(self, note: str) -> list[int]:
        """End every queued or running run as ``interrupted`` (at server start-up)."""
        with self._unit("mark unfinished runs as interrupted", write=True) as session:
            ids = list(
                session.scalars(
                    select(Run.id).where(Run.status.in_(ACTIVE_STATUSES)).order_by(Run.id)
                )
            )
            if ids:
                session.execute(
                    update(Run)
                    .where(Run.id.in_(ids))
                    .values(status="interrupted", error=note, finished=utcnow())
                )
            return ids

    # ------------------------------------------------------------ epoch metrics
    def add_epoch(
        self,
        run_id: int,
        epoch: int,
        loss: float | None,
        terms: Mapping[str, Any] | None = None,
        val: Mapping[str, Any] | None = None,
        seconds: float = 0.0,
    ) -> EpochRecord:
        """Record one epoch. ``val`` holds validation metrics such as ``{"ndcg@10": ...}``;
        its NDCG and recall (at 10 when present) also go to their own columns."""
        val = jsonable(dict(val or {}))
        with self._unit(f"save epoch {epoch} of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            row = EpochMetric(
                run_id=run_id,
                epoch=int(epoch),
                loss=_finite(loss),
                terms=jsonable(dict(terms or {})),
                val_ndcg=_pick(val, "ndcg"),
                val_recall=_pick(val, "recall"),
                val=val,
                seconds=float(seconds),
            )
            session.add(row)
            session.flush()
            return _epoch_record(row)

    def epochs(self, run_id: int) -> list[EpochRecord]:
        with self._unit(f"read the epochs of run {run_id}") as session:
            rows = session.scalars(
                select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch)
            ).all()
            return [_epoch_record(r) for r in rows]

    def epochs_frame(self, run_ids: Sequence[int]) -> pd.DataFrame:
        """Tidy per-epoch metrics of several runs (one row per run and epoch)."""
        columns = ["run_id", "epoch", "loss", "val_ndcg", "val_recall", "seconds"]
        with self._unit("read epoch metrics") as session:
            rows = session.execute(
                select(*(getattr(EpochMetric, c) for c in columns))
                .where(EpochMetric.run_id.in_(list(run_ids)))
                .order_by(EpochMetric.run_id, EpochMetric.epoch)
            ).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=columns)

    # ------------------------------------------------------------ results
    def set_results(
        self,
        run_id: int,
        split: str,
        rows: Iterable[tuple[str, int, float | None]] | Mapping[str, float | None],
    ) -> None:
        """Replace the results of ``split`` with ``rows``: ``(metric, k, value)`` tuples or a
        mapping such as ``{"ndcg@10": 0.31, "coverage": 0.4}`` (k = 0 without ``@``)."""
        if isinstance(rows, Mapping):
            items = [(*parse_metric_key(key), value) for key, value in rows.items()]
        else:
            items = [(metric, int(k), value) for metric, k, value in rows]
        with self._unit(f"save the {split} results of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            session.execute(delete(Result).where(Result.run_id == run_id, Result.split == split))
            session.add_all(
                Result(run_id=run_id, split=split, metric=m, k=int(k), value=_finite(v))
                for m, k, v in items
            )

    def results(self, run_id: int, split: str = "test") -> dict[str, float | None]:
        """``{"ndcg@10": value, ...}`` for one run and split."""
        return {r.key: r.value for r in self.result_records(run_id, split)}

    def result_records(self, run_id: int, split: str | None = None) -> list[ResultRecord]:
        query = select(Result).where(Result.run_id == run_id)
        if split is not None:
            query = query.where(Result.split == split)
        with self._unit(f"read the results of run {run_id}") as session:
            rows = session.scalars(query.order_by(Result.split, Result.metric, Result.k)).all()
            return [_result_record(r) for r in rows]

    def results_frame(self, run_ids: Sequence[int], split: str | None = None) -> pd.DataFrame:
        """Tidy results of several runs: one row per (run, split, metric, k), with the run's
        name, role and model for charts and tables."""
        columns = ["run_id", "name", "role", "model", "split", "metric", "k", "key", "value"]
        query = (
            select(
                Run.id,
                Run.name,
                Run.role,
                Run.model,
                Result.split,
                Result.metric,
                Result.k,
                Result.value,
            )
            .join(Result, Result.run_id == Run.id)
            .where(Run.id.in_(list(run_ids)))
            .order_by(Run.id, Result.split, Result.metric, Result.k)
        )
        if split is not None:
            query = query.where(Result.split == split)
        with self._unit("read results") as session:
            rows = session.execute(query).all()
        records = [
            (rid, name, role, model, sp, metric, k, metric_key(metric, k), value)
            for rid, name, role, model, sp, metric, k, value in rows
        ]
        frame = pd.DataFrame(records, columns=columns)
        frame["value"] = frame["value"].astype("float64")
        return frame

    # ------------------------------------------------------------ latency, parity
    def add_latency(
        self,
        run_id: int,
        runtime: str,
        batch: int,
        p50: float,
        p95: float,
        p99: float,
        qps: float,
        threads: int | None = None,
        env: Mapping[str, Any] | None = None,
    ) -> LatencyRecord:
        """Record one latency measurement (milliseconds for the percentiles)."""
        with self._unit(f"save a latency measurement of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            row = Latency(
                run_id=run_id,
                runtime=runtime,
                batch=int(batch),
                p50=float(p50),
                p95=float(p95),
                p99=float(p99),
                qps=float(qps),
                threads=None if threads is None else int(threads),
                env=jsonable(dict(env or {})),
            )
            session.add(row)
            session.flush()
            return _latency_record(row)

    def latencies(self, run_id: int) -> list[LatencyRecord]:
        with self._unit(f"read the latency of run {run_id}") as session:
            rows = session.scalars(
                select(Latency).where(Latency.run_id == run_id).order_by(Latency.id)
            ).all()
            return [_latency_record(r) for r in rows]

    def add_parity(
        self, run_id: int, max_abs_diff: float, topk_agreement: float, n_users: int
    ) -> ParityRecord:
        with self._unit(f"save a parity check of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            row = Parity(
                run_id=run_id,
                max_abs_diff=float(max_abs_diff),
                topk_agreement=float(topk_agreement),
                n_users=int(n_users),
            )
            session.add(row)
            session.flush()
            return _parity_record(row)

    def parities(self, run_id: int) -> list[ParityRecord]:
        with self._unit(f"read the parity checks of run {run_id}") as session:
            rows = session.scalars(
                select(Parity).where(Parity.run_id == run_id).order_by(Parity.id)
            ).all()
            return [_parity_record(r) for r in rows]

    # ------------------------------------------------------------ artifacts
    def add_artifact(
        self,
        run_id: int,
        kind: str,
        path: str | os.PathLike[str],
        bytes: int,  # noqa: A002 - the column's name
        sha256: str,
    ) -> ArtifactRecord:
        """Record a finished file of a run; writing the same path again updates its row."""
        stored = paths.to_stored(path)
        with self._unit(f"record an artifact of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            row = session.scalars(
                select(Artifact).where(Artifact.run_id == run_id, Artifact.path == stored)
            ).one_or_none()
            if row is None:
                row = Artifact(run_id=run_id, path=stored)
                session.add(row)
            row.kind, row.bytes, row.sha256, row.created = kind, int(bytes), sha256, utcnow()
            session.flush()
            return _artifact_record(row)

    def artifacts(self, run_id: int) -> list[ArtifactRecord]:
        with self._unit(f"read the artifacts of run {run_id}") as session:
            rows = session.scalars(
                select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)
            ).all()
            return [_artifact_record(r) for r in rows]

    def delete_artifacts(self, run_id: int) -> None:
        """Forget every artifact of a run and delete the files (inside the data directory)."""
        with self._unit(f"delete the artifacts of run {run_id}", write=True) as session:
            stored = session.scalars(select(Artifact.path).where(Artifact.run_id == run_id)).all()
            session.execute(delete(Artifact).where(Artifact.run_id == run_id))
        _remove_paths(paths.from_stored(p) for p in stored)

    # ------------------------------------------------------------ summaries
    def count_runs(self) -> dict[str, int]:
        """Number of runs per status (for the sidebar)."""
        with self._unit("count runs") as session:
            rows = session.execute(select(Run.status, func.count()).group_by(Run.status)).all()
            return {status: int(n) for status, n in rows}


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(f"#{i}" for i in ids)


__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "ArtifactRecord",
    "DatasetRecord",
    "EpochRecord",
    "LatencyRecord",
    "ParityRecord",
    "ResultRecord",
    "RunRecord",
    "Store",
    "database_url",
    "head_revision",
    "make_engine",
    "metric_key",
    "parse_metric_key",
    "redacted_url",
]
