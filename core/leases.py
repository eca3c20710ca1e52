"""The run queue in the store: claims, leases, heartbeats, cancel requests, progress.

Several processes (app servers and headless workers) share one database; these queries are
how they share the work without ever running a run twice:

- **claim**: a job manager takes the oldest queued run and marks it ``running`` under its
  own owner id, in one write transaction. PostgreSQL picks the row with ``SELECT ... FOR
  UPDATE SKIP LOCKED`` (two claimers never wait for, or get, the same row); SQLite's write
  transactions (``BEGIN IMMEDIATE``) are serialised, which gives the same guarantee.
- **lease**: a claim comes with ``lease_expires``; the owner renews it with a heartbeat.
  Only a run whose lease has run out (its process died or hung) is marked ``interrupted``,
  by whichever process notices first; starting another process changes nothing.
- **cancel**: any process may ask; a queued run ends at once, a running one gets
  ``cancel_requested``, which its owner reads (heartbeat, progress, epoch) and turns into
  the in-process cancel Event. Once the owner has *settled* the run (decided how it ends),
  a cancel is refused, so "cancel said yes" always means the run ends cancelled.
- **progress**: the owner writes its latest snapshot to the run's row, so every process's
  pages show the same progress.

Lease times come from the database's clock on PostgreSQL (several machines, one clock) and
from this machine's clock on SQLite (one machine by construction).

`LeaseQueries` is mixed into `core.store.Store`: these are Store methods, each one unit of
work, kept in their own module so that the store's module stays readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from core.db import Run, utcnow
from core.enums import Status
from core.errors import StoreError
from core.records import RunRecord, jsonable

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class LeaseLost(StoreError):
    """This process no longer holds the run (its lease expired and it was interrupted)."""


class LeaseQueries:
    """Store methods for sharing runs between processes (see the module docstring)."""

    # Provided by core.store.Store.
    backend: str

    if TYPE_CHECKING:

        def _unit(self, action: str, *, write: bool = False) -> AbstractContextManager[Session]: ...

        @staticmethod
        def _run_row(session: Session, run_id: int, *, lock: bool = False) -> Run: ...

        @staticmethod
        def _run_record(row: Run) -> RunRecord: ...

        def _settle_dependents(self, session: Session, parent: Run) -> list[int]: ...

    def _clock(self, session: Session) -> datetime:
        """Now, by the database server's clock on PostgreSQL (shared by every machine)."""
        if self.backend == "postgresql":
            return session.scalar(select(func.now()))
        return utcnow()

    def claim_run(self, owner: str, lease_s: float) -> RunRecord | None:
        """Take the oldest queued run for ``owner``: it becomes ``running`` with a lease of
        ``lease_s`` seconds. None when nothing is queued. Exactly one claimer gets a run."""
        with self._unit("claim a queued run", write=True) as session:
            row = session.scalars(
                select(Run)
                .where(Run.status == Status.QUEUED)
                .order_by(Run.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                return None
            now = self._clock(session)
            row.status = Status.RUNNING
            row.started = now
            row.owner = owner
            row.heartbeat = now
            row.lease_expires = now + timedelta(seconds=lease_s)
            row.cancel_requested = False
            row.settled = False
            row.progress = {"message": "starting"}
            session.flush()
            return self._run_record(row)

    def renew_leases(
        self, owner: str, run_ids: Iterable[int], lease_s: float
    ) -> tuple[set[int], set[int]]:
        """The heartbeat: extend ``owner``'s leases on ``run_ids``.

        Returns ``(cancel_requested, lost)``: runs someone asked to cancel, and runs this
        owner no longer holds (interrupted after its lease expired, or deleted).
        """
        wanted = set(run_ids)
        if not wanted:
            return set(), set()
        with self._unit("renew the leases of running runs", write=True) as session:
            now = self._clock(session)
            session.execute(
                update(Run)
                .where(Run.id.in_(wanted), Run.owner == owner, Run.status == Status.RUNNING)
                .values(heartbeat=now, lease_expires=now + timedelta(seconds=lease_s))
            )
            held = dict(
                session.execute(
                    select(Run.id, Run.cancel_requested).where(
                        Run.id.in_(wanted), Run.owner == owner, Run.status == Status.RUNNING
                    )
                ).all()
            )
        return {i for i, flag in held.items() if flag}, wanted - set(held)

    def expired_runs(self) -> list[int]:
        """Running runs whose lease has run out, or that never had one (rows written before
        leases existed, or by hand): their process is gone."""
        with self._unit("look for runs whose process stopped") as session:
            query = select(Run.id).where(self._expired(session)).order_by(Run.id)
            return list(session.scalars(query))

    def _expired(self, session: Session) -> Any:
        return (Run.status == Status.RUNNING) & or_(
            Run.lease_expires.is_(None), Run.lease_expires < self._clock(session)
        )

    def expire_leases(self, note: str, cancelled_note: str | None = None) -> list[int]:
        """End running runs whose lease has expired: ``interrupted`` with ``note``, or
        ``cancelled`` with ``cancelled_note`` when a cancel had been accepted for them (a
        cancel that said yes is kept, even when the owner died before acting on it).
        Returns their ids. Queued runs stay queued: any live process will still run them;
        runs of a plan waiting for an expired run end cancelled (see core.plan_queries)."""
        if not self.expired_runs():  # the common case: a read, no write lock
            return []
        with self._unit("mark runs whose process stopped as interrupted", write=True) as session:
            # Re-checked under the row lock; a row its owner is renewing right now is skipped.
            rows = session.scalars(
                select(Run)
                .where(self._expired(session))
                .order_by(Run.id)
                .with_for_update(skip_locked=True)
            ).all()
            now = self._clock(session)
            for row in rows:
                if row.cancel_requested and cancelled_note is not None:
                    row.status, row.error = Status.CANCELLED, cancelled_note
                else:
                    row.status, row.error = Status.INTERRUPTED, note
                row.finished = now
                self._settle_dependents(session, row)
            return [row.id for row in rows]

    def request_cancel(self, run_id: int, note: str) -> bool:
        """Cancel from any process. A queued or waiting run ends ``cancelled`` now (and so do
        the runs of its plan waiting for it); a running one is flagged for its owner. False
        when it is too late (finished, or being settled)."""
        with self._unit(f"cancel run {run_id}", write=True) as session:
            row = self._run_row(session, run_id, lock=True)
            if row.status in (Status.QUEUED, Status.WAITING):
                row.status, row.error, row.finished = Status.CANCELLED, note, self._clock(session)
                self._settle_dependents(session, row)
                return True
            if row.status == Status.RUNNING and not row.settled:
                row.cancel_requested = True
                row.progress = {**(row.progress or {}), "message": "cancelling"}
                return True
            return False

    def settle(self, run_id: int, owner: str) -> bool:
        """The owner decides how its run ends: from now on cancels are refused. Returns
        whether a cancel was requested before that moment."""
        with self._unit(f"settle run {run_id}", write=True) as session:
            row = self._held(session, run_id, owner)
            row.settled = True
            return bool(row.cancel_requested)

    def set_progress(self, run_id: int, owner: str, progress: Mapping[str, Any]) -> bool:
        """Store the owner's progress snapshot; returns whether a cancel was requested."""
        with self._unit(f"save the progress of run {run_id}", write=True) as session:
            row = self._held(session, run_id, owner)
            row.progress = jsonable(dict(progress))
            return bool(row.cancel_requested)

    def _held(self, session: Session, run_id: int, owner: str) -> Run:
        row = self._run_row(session, run_id, lock=True)
        if row.owner != owner or row.status != Status.RUNNING:
            raise LeaseLost(
                f"Run {run_id} is no longer held by this process (it is {row.status}); "
                "its lease ran out, so another process has taken it over."
            )
        return row
