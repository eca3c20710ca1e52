"""The run store: datasets, runs, their metrics and files, in one SQL database.

`Store` is the only place that opens database sessions. Each public method is one unit of
work (a session that commits or rolls back), so one `Store` can be shared by every thread
of the server; what comes out are plain frozen records (`RunRecord`, ...; see
`core.records`), never ORM rows. Database failures surface as `core.errors.StoreError`
with a readable sentence, scrubbed of the database password.

The connection itself (URL, engine, SQLite pragmas and write lock, redaction) is set up in
`core.engine`; a SQLite file is the default and a PostgreSQL URL is what a team shares:
several app processes and headless workers on one store. The schema is created and
upgraded by the Alembic migrations in ``migrations/`` when a `Store` is opened.

The Store's methods live in four modules, one concern each: this one (lifecycle, datasets,
runs), `core.leases` (the run queue: claims, leases, cancel requests), `core.outputs` (what
runs produce: epochs, results, latency, parity, files) and `core.plan_queries` (run plans:
dependencies between runs, released or ended when their parent ends).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core import paths
from core.db import Artifact, Dataset, Run, Tag, utcnow
from core.engine import (
    WRITE_OPTION,
    alembic_config,
    database_url,
    describe_error,
    first_line,
    make_engine,
    migration_connection,
    redacted_url,
    secrets_of,
)
from core.enums import ACTIVE_STATUSES, TERMINAL_STATUSES, Role, Status, choice_list
from core.errors import ConfigError, StoreError
from core.leases import LeaseQueries
from core.outputs import RunOutputs, remove_paths
from core.plan_queries import PlanQueries
from core.records import DatasetRecord, RunRecord, fit_text, jsonable, to_record
from core.settings import DB_URL_ENV

log = logging.getLogger(__name__)

# Terminal states have no way out: a finished run's record is final (only `requeue` resumes
# an interrupted one). A waiting run is released by the store when its parent succeeds.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.INTERRUPTED}),
    Status.WAITING: frozenset({Status.CANCELLED}),
    Status.RUNNING: TERMINAL_STATUSES,
}
# Alembic's `context` is a module-level proxy: two migrations must never run at once.
_MIGRATION_LOCK = threading.Lock()
_UNSET: Any = object()


# --------------------------------------------------------------------------- store
class Store(LeaseQueries, RunOutputs, PlanQueries):
    """Thread-safe access to the run store; every method is one committed unit of work."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self._url = url or database_url()
        self._secrets = secrets_of(self._url)
        try:
            self._engine = make_engine(self._url)
        except Exception as exc:
            raise StoreError(
                f"The database URL {redacted_url(self._url)} cannot be used "
                f"({self._scrub(first_line(exc))}); fix {DB_URL_ENV}."
            ) from exc
        self.backend = self._engine.dialect.name
        self._write_engine = self._engine.execution_options(**{WRITE_OPTION: True})
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

    def _scrub(self, text: str) -> str:
        """``text`` without the URL's password (drivers may echo parts of the URL)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _hint(self) -> str:
        if self.backend == "sqlite":
            return "that the disk is writable"
        return "that the database server is running and reachable"

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
        config = alembic_config()
        script = ScriptDirectory.from_config(config)
        head = script.get_current_head()
        known = {s.revision for s in script.walk_revisions()}
        try:
            with _MIGRATION_LOCK, migration_connection(self._write_engine) as connection:
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
                f"({self._scrub(describe_error(exc))}); check {DB_URL_ENV} and {self._hint()}."
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
                f"The run store could not {action} ({self._scrub(describe_error(exc))}); "
                "please try again."
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

    @staticmethod
    def _run_record(row: Run) -> RunRecord:
        return to_record(RunRecord, row)

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
        name, source = fit_text(name, 200), fit_text(source, 500)
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
                return to_record(DatasetRecord, row)
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
            return None if row is None else to_record(DatasetRecord, row)

    def get_dataset(self, dataset_id: int) -> DatasetRecord:
        with self._unit(f"read dataset {dataset_id}") as session:
            row = session.get(Dataset, dataset_id)
            if row is None:
                raise StoreError(f"Dataset {dataset_id} does not exist (it may have been deleted).")
            return to_record(DatasetRecord, row)

    def list_datasets(self) -> list[DatasetRecord]:
        with self._unit("list datasets") as session:
            rows = session.scalars(select(Dataset).order_by(Dataset.id)).all()
            return [to_record(DatasetRecord, r) for r in rows]

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
        remove_paths(files)

    # ------------------------------------------------------------ runs
    def create_run(
        self,
        dataset_id: int,
        role: str,
        model: str,
        config: Mapping[str, Any],
        teacher_run_id: int | None = None,
        status: str = Status.QUEUED,
        name: str | None = None,
    ) -> RunRecord:
        """Record a new run. Its config is stored once and can never be changed."""
        if role not in set(Role):
            raise ConfigError(f"Unknown run role {role!r}; use one of {choice_list(Role)}.")
        if status not in set(Status):
            raise ConfigError(f"Unknown run status {status!r}; use one of {choice_list(Status)}.")
        if status == Status.WAITING:
            raise ConfigError("Only a run of a plan can wait for another; use create_plan.")
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
                name=None if name is None else fit_text(name, 200),
                created=now,
                started=now if status != Status.QUEUED else None,
                finished=now if status in TERMINAL_STATUSES else None,
            )
            session.add(row)
            session.flush()
            return to_record(RunRecord, row)

    def get_run(self, run_id: int) -> RunRecord:
        with self._unit(f"read run {run_id}") as session:
            return to_record(RunRecord, self._run_row(session, run_id))

    def list_runs(
        self,
        dataset_id: int | None = None,
        role: str | Iterable[str] | None = None,
        status: str | Iterable[str] | None = None,
        teacher_run_id: int | None = None,
        tag: str | None = None,
        plan_id: int | None = None,
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
        if plan_id is not None:
            query = query.where(Run.plan_id == plan_id)
        with self._unit("list runs") as session:
            return [to_record(RunRecord, r) for r in session.scalars(query).all()]

    def set_status(
        self, run_id: int, status: str, error: str | None = None, *, owner: str | None = None
    ) -> RunRecord:
        """Move a run to ``status``; illegal transitions (e.g. out of a terminal state) raise.

        ``started`` is set on entering ``running``, ``finished`` on entering a terminal state.
        With ``owner``, the run must still be running under that owner (`LeaseLost` if not).
        A run that ends settles the runs of its plan waiting for it, in the same transaction:
        queued after a success, cancelled with the reason otherwise (see core.plan_queries).
        """
        if status not in set(Status):
            raise StoreError(f"Unknown run status {status!r}; use one of {choice_list(Status)}.")
        with self._unit(f"update the status of run {run_id}", write=True) as session:
            row = (
                self._run_row(session, run_id, lock=True)
                if owner is None
                else self._held(session, run_id, owner)
            )
            if status not in TRANSITIONS.get(row.status, frozenset()):
                raise StoreError(
                    f"Run {run_id} cannot go from {row.status} to {status}"
                    + (" (it has already finished)." if row.status in TERMINAL_STATUSES else ".")
                )
            now = utcnow()
            row.status = status
            if status == Status.RUNNING:
                row.started = now
            if status in TERMINAL_STATUSES:
                row.finished = now
            if error is not None:
                row.error = error
            if status in TERMINAL_STATUSES:
                self._settle_dependents(session, row)
            session.flush()
            return to_record(RunRecord, row)

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
            return to_record(RunRecord, row)

    def set_notes(self, run_id: int, notes: str | None) -> RunRecord:
        with self._unit(f"save the notes of run {run_id}", write=True) as session:
            row = self._run_row(session, run_id)
            row.notes = notes or None
            session.flush()
            return to_record(RunRecord, row)

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

    def delete_run(self, run_id: int) -> None:
        """Delete a run, its metrics and its files (only those inside the data directory)."""
        with self._unit(f"delete run {run_id}", write=True) as session:
            row = self._run_row(session, run_id)
            if row.status in ACTIVE_STATUSES:
                raise StoreError(f"Run {run_id} is still {row.status}; cancel it first.")
            self._end_dependents_of_deleted(session, row)
            files = self._run_files(session, row)
            session.execute(delete(Run).where(Run.id == run_id))
        remove_paths(files)

    @staticmethod
    def _run_files(session: Session, row: Run) -> list[Path | None]:
        stored = session.scalars(select(Artifact.path).where(Artifact.run_id == row.id)).all()
        return [
            paths.from_stored(row.checkpoint_path),
            paths.from_stored(row.onnx_path),
            *(paths.from_stored(p) for p in stored),
            paths.run_dir(row.id),
        ]

    # ------------------------------------------------------------ summaries
    def count_runs(self) -> dict[str, int]:
        """Number of runs per status (for the sidebar)."""
        with self._unit("count runs") as session:
            rows = session.execute(select(Run.status, func.count()).group_by(Run.status)).all()
            return {status: int(n) for status, n in rows}


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(f"#{i}" for i in ids)
