"""The job manager: training runs queued in the store, served by worker threads of any process.

The queue *is* the store. `submit` records a run as ``queued``; a worker thread of any
`JobManager` sharing the database (the app's, another app process's, a headless
``python -m core worker``'s) claims it (exactly one does, see `core.leases`), marks it
``running`` under its lease and calls the *runner* (the training pipeline) with a
`JobContext` (core.job_context), through which the runner reports epochs, writes files
and sees cancellation. Status, epochs and progress snapshots are written to the store as
they happen, so every process's pages show the same thing and never talk to the threads.
`submit_plan` records a run plan (students after their teacher): its waiting runs are
queued by the store itself when their parent succeeds (see core.plan_queries).
With a backend, the worker threads hand each claimed run to another process instead of
running it themselves: a fresh local process (core.process_backend, what the app and the
headless workers use) or a Ray task (``DISTILLERY_RAY_ADDRESS``, core.ray_backend);
everything else stays as described.

Guarantees:
- each run executes once, whichever processes share the store;
- a cancel (from any process) ends the run ``cancelled`` as soon as the runner next looks
  at the cancel event (the trainer checks it between batches); a cancelled run keeps no
  files, and once `cancel` has said yes the run ends cancelled;
- a failing runner ends its run ``failed`` with a one-line error, and the worker goes on;
- files are written under a temporary name, fsynced and renamed, so a recorded artifact is
  never half-written;
- a worker holds a lease on each run it executes and renews it with a heartbeat. A run
  becomes ``interrupted`` (its partial files removed) only when its lease runs out, i.e.
  its process died or hung; a process that starts never touches another's live runs.
  Queued and waiting runs stay so across restarts: some process will run them; an
  interrupted run is queued again by `resume`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core import paths, settings
from core.enums import ACTIVE_STATUSES, TERMINAL_STATUSES, Role, Status, choice_list
from core.errors import ConfigError, DistilleryError, StoreError, TrainingCancelled
from core.job_context import (
    CANCELLED_NOTE,
    INTERRUPTED_NOTE,
    STOPPED_NOTE,
    JobContext,
    JobOutcome,
    Progress,
    Runner,
    check_spec,
    failure_message,
    remove_partial_files,
    remove_path,
)
from core.leases import LeaseLost
from core.records import JobSpec, PlanRecord, PlanStep, RunRecord
from core.store import Store

if TYPE_CHECKING:
    from core.process_backend import ProcessBackend
    from core.ray_backend import RayBackend

log = logging.getLogger(__name__)

# How long a claim holds without a heartbeat: long enough to ride out a slow database or
# a long garbage-collection pause, short enough that a dead worker's run is noticed soon.
LEASE_S = 30.0
HEARTBEAT_S = 2.0  # also the longest a cancel from another process waits to be seen
POLL_S = 1.0  # how often an idle worker looks for runs queued by other processes
_WAIT_POLL_S = 0.25  # `wait` on a run that another process executes


def new_owner_id() -> str:
    """A job manager's identity in the store: host, process and a random part (two managers
    in one process never share leases)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class _Executing:
    """A run this manager executes right now."""

    cancel: threading.Event = field(default_factory=threading.Event)
    stop_note: str | None = None  # set when this process stops it (ends interrupted)
    lost: bool = False  # its lease ran out and another process ended it

    def stop(self, note: str) -> None:
        self.stop_note = note
        self.cancel.set()


class JobManager:
    """Worker threads serving the store's queue, plus a heartbeat thread (see the module doc).

    ``workers`` may be 0: such a manager submits, cancels and shows progress, and leaves
    the training to other processes. ``max_runs`` stops claiming after that many runs
    (a headless worker's ``--max-runs``). ``lease_s`` is how long this manager's claims
    hold without a heartbeat.

    ``backend`` runs the claimed runs elsewhere: a `core.ray_backend.RayBackend` (then
    there is one worker thread per run in flight on the cluster) or a
    `core.process_backend.ProcessBackend` (a fresh local process per run: the app's and
    the headless workers' default, core.process_backend.default_backend). By default a
    manager with workers uses Ray when ``DISTILLERY_RAY_ADDRESS`` is set, else its own
    threads.
    ``owner`` is given only to the manager a Ray task opens for a run claimed elsewhere.
    """

    def __init__(
        self,
        store: Store,
        runner: Runner,
        workers: int = 1,
        *,
        recover: bool = True,
        lease_s: float = LEASE_S,
        heartbeat_s: float | None = None,
        poll_s: float = POLL_S,
        max_runs: int | None = None,
        backend: RayBackend | ProcessBackend | None = None,
        owner: str | None = None,
    ) -> None:
        if workers < 0:
            raise ConfigError("The job manager cannot have a negative number of workers.")
        if lease_s <= 0 or poll_s <= 0:
            raise ConfigError("The lease and the poll interval must be positive seconds.")
        if backend is None and workers > 0 and settings.ray_address():
            from core.ray_backend import RayBackend

            backend = RayBackend(settings.ray_address())
        self.backend = backend
        if backend is not None:
            workers = backend.slots(workers)
        self.store = store
        self.owner = owner or new_owner_id()
        self.lease_s = float(lease_s)
        self._heartbeat_s = heartbeat_s or min(HEARTBEAT_S, self.lease_s / 3)
        self._poll_s = poll_s
        self._runner = runner
        self._max_runs = max_runs
        # Guards everything below; `_changed` wakes idle workers and waiters when a run is
        # submitted, cancelled or ends here.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._generation = 0
        self._executing: dict[int, _Executing] = {}
        self._submitted: set[int] = set()
        self._claimed = 0
        self._closed = False  # no new submissions; workers drain what was submitted here
        self._stopping = False  # workers claim nothing more
        self._beat_stop = threading.Event()
        self.recovered: list[int] = self.recover() if recover else []
        self._threads = [
            threading.Thread(target=self._work, name=f"distillery-job-{i}", daemon=True)
            for i in range(workers)
        ]
        self._beat_thread = threading.Thread(
            target=self._beat, name="distillery-heartbeat", daemon=True
        )
        for thread in [*self._threads, self._beat_thread]:
            thread.start()

    # ------------------------------------------------------------ recovery
    def recover(self) -> list[int]:
        """End runs whose lease has expired and remove their partial files.

        They end ``interrupted`` (or ``cancelled``, if a cancel had been accepted): their
        temporary files are removed, and so is their folder unless it holds a finished
        (recorded) artifact; a cancelled run keeps no files. Runs of live processes,
        queued runs and finished runs are not touched.
        """
        ids = self.store.expire_leases(INTERRUPTED_NOTE, CANCELLED_NOTE)
        for run_id in ids:
            if self.store.get_run(run_id).status == Status.CANCELLED:
                self.store.delete_artifacts(run_id)
                remove_path(paths.run_dir(run_id))
            else:
                remove_partial_files(self.store, run_id)
        if ids:
            log.warning("ended %d run(s) whose process stopped (lease expired): %s", len(ids), ids)
        return ids

    # ------------------------------------------------------------ public API
    def submit(self, spec: JobSpec) -> int:
        """Validate ``spec`` and record the run as queued; returns the run id."""
        if self._closed:
            raise ConfigError("The job manager has shut down; restart the app to train again.")
        check_spec(self.store, spec)
        run = self.store.create_run(
            spec.dataset_id,
            spec.role,
            spec.model,
            spec.config,
            teacher_run_id=spec.teacher_run_id,
            status=Status.QUEUED,
            name=spec.name,
        )
        with self._changed:
            self._submitted.add(run.id)
            self._touch_locked()
        return run.id

    def submit_plan(
        self,
        name: str,
        kind: str,
        steps: list[PlanStep],
        config: dict | None = None,
    ) -> tuple[PlanRecord, list[int]]:
        """Record a run plan and its runs in one go; returns the plan and the run ids in step
        order. Steps that wait for another run start ``waiting``; the store queues them when
        that run succeeds, whichever process ran it (see core.plan_queries). A bad step (a
        deleted or failed teacher, another dataset) is refused with one sentence, and then
        nothing is recorded."""
        if self._closed:
            raise ConfigError("The job manager has shut down; restart the app to train again.")
        if not steps:
            raise ConfigError("A plan needs at least one run.")
        dataset_id = steps[0].spec.dataset_id
        for step in steps:
            if step.after is None and step.after_run is None:
                check_spec(self.store, step.spec)
            elif step.spec.role not in set(Role):
                raise ConfigError(
                    f"Unknown run role {step.spec.role!r}; use one of {choice_list(Role)}."
                )
        plan, runs = self.store.create_plan(name, kind, dataset_id, steps, config)
        with self._changed:
            self._submitted.update(r.id for r in runs)
            self._touch_locked()
        return plan, [r.id for r in runs]

    def resume(self, run_id: int) -> list[int]:
        """Queue an interrupted run again ("one click resumes it"), from its first epoch;
        the runs of its plan that were ended because it stopped wait for it again. Returns
        the ids put back. Anything but an interrupted run is refused with one sentence."""
        if self._closed:
            raise ConfigError("The job manager has shut down; restart the app to train again.")
        ids = self.store.requeue(run_id)
        with self._changed:
            self._submitted.update(ids)
            self._touch_locked()
        return ids

    def cancel(self, run_id: int) -> bool:
        """Cancel a run, wherever it runs: a queued one ends now, a running one at its next
        cancel check (at once here, within a heartbeat in another process).

        Returns False when it is too late: the run has finished or is finishing.
        """
        accepted = self.store.request_cancel(run_id, CANCELLED_NOTE)
        if accepted:
            with self._changed:
                executing = self._executing.get(run_id)
                if executing is not None:
                    executing.cancel.set()
                self._touch_locked()
        return accepted

    def status(self, run_id: int) -> str:
        """The run's status as stored (the source of truth)."""
        return self.store.get_run(run_id).status

    def progress(self, run_id: int) -> Progress | None:
        """The latest snapshot of any run in the store (None if there is no such run)."""
        try:
            return Progress.of(self.store.get_run(run_id))
        except StoreError:
            return None

    def active(self) -> list[Progress]:
        """Snapshots of every queued and running run in the store, oldest first."""
        return [Progress.of(r) for r in self.store.list_runs(status=ACTIVE_STATUSES)]

    def wait(self, run_id: int, timeout: float | None = None) -> str:
        """Block until a run has finished (or ``timeout``); return its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                generation = self._generation
            status = self.status(run_id)
            left = None if deadline is None else deadline - time.monotonic()
            if status in TERMINAL_STATUSES or (left is not None and left <= 0):
                return status
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(_WAIT_POLL_S if left is None else min(_WAIT_POLL_S, left))

    def shutdown(
        self, wait: bool = True, cancel_pending: bool = False, *, interrupt: bool = False
    ) -> None:
        """Stop accepting jobs.

        By default the workers still run what was submitted here and is queued.
        ``cancel_pending`` cancels this manager's queued and running submissions (wherever
        they run) and stops the runs it executes for others as interrupted. ``interrupt``
        (a worker told to stop) takes nothing more from the queue and ends the runs it
        executes as interrupted at their next cancel check. ``wait`` blocks until the
        workers have stopped.
        """
        with self._changed:
            self._closed = True
            self._stopping = self._stopping or cancel_pending or interrupt
            submitted = set(self._submitted)
        if cancel_pending and submitted:
            active = {r.id for r in self.store.list_runs(status=ACTIVE_STATUSES)}
            for run_id in sorted(submitted & active):
                try:
                    self.cancel(run_id)
                except StoreError as exc:
                    log.warning("could not cancel run %s at shutdown: %s", run_id, exc)
        with self._changed:
            if cancel_pending or interrupt:
                for run_id, executing in self._executing.items():
                    if interrupt or run_id not in submitted:
                        executing.stop(STOPPED_NOTE)
            self._touch_locked()
        if wait:
            self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker threads to stop (after `shutdown`, or ``max_runs``); returns
        True when they all have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        done = not any(t.is_alive() for t in self._threads)
        if done:
            self._beat_stop.set()
            if threading.current_thread() is not self._beat_thread:
                self._beat_thread.join()
        return done

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True, cancel_pending=True)

    # ------------------------------------------------------------ workers
    def _touch_locked(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    def _reserve(self) -> int | None:
        """A claim slot (the current generation), or None when this worker should stop."""
        with self._lock:
            if self._stopping:
                return None
            if self._max_runs is not None and self._claimed >= self._max_runs:
                return None
            draining = self._closed
            pending = set(self._submitted)
            self._claimed += 1
            generation = self._generation
        # After shutdown, drain only what was submitted here; the rest waits for a live
        # process (one that will also watch over it).
        if draining and not any(
            r.id in pending for r in self.store.list_runs(status=(Status.QUEUED, Status.WAITING))
        ):
            self._unreserve()
            return None
        return generation

    def _unreserve(self) -> None:
        with self._lock:
            self._claimed -= 1

    def _work(self) -> None:
        while True:
            try:
                generation = self._reserve()
            except StoreError as exc:
                log.warning("job worker could not read the queue: %s", exc)
                self._unreserve()
                time.sleep(self._poll_s)
                continue
            if generation is None:
                return
            try:
                run = self.store.claim_run(self.owner, self.lease_s)
            except StoreError as exc:
                log.warning("job worker could not claim a run: %s", exc)
                run = None
            if run is None:
                self._unreserve()
                with self._changed:
                    if self._generation == generation and not self._stopping:
                        self._changed.wait(self._poll_s)
                continue
            try:
                if self.backend is None:
                    self._serve(run)
                else:
                    self.backend.serve(self, run)
            except BaseException:  # the worker must outlive any single run
                log.exception("job worker failed while handling run %s", run.id)

    def _begin(self, run: RunRecord) -> _Executing:
        """Register a claimed run as executing here: its lease is renewed, cancels reach it."""
        executing = _Executing()
        with self._lock:
            self._executing[run.id] = executing
        return executing

    def _serve(self, run: RunRecord) -> None:
        """Run a claimed run's runner here and record how it ended (a Ray task runs this too)."""
        executing = self._begin(run)
        # One line per execution: the reliability bench counts them to prove "exactly once".
        log.info("run %s started by %s", run.id, self.owner)
        status, error = Status.SUCCEEDED, None
        try:
            outcome = self._runner(JobContext(self, run, JobSpec.of(run), executing.cancel))
            if self._settle(run.id):
                raise TrainingCancelled(CANCELLED_NOTE)
            self._store_outcome(run.id, outcome)
        except BaseException as exc:
            status, error = self._ending(run.id, executing, exc)
        self._end(run.id, executing, status, error)

    def _settle(self, run_id: int) -> bool:
        """Whether the run was cancelled, decided once in the store: from now on `cancel`
        returns False, from any process.

        Without this, a cancel arriving between the runner's return and the final status
        would report success to the caller while the run still ended succeeded or failed.
        """
        return self.store.settle(run_id, self.owner)

    def _ending(
        self, run_id: int, executing: _Executing, exc: BaseException
    ) -> tuple[str | None, str | None]:
        """The final status and error of a run whose runner raised ``exc`` (None: lost)."""
        if isinstance(exc, LeaseLost) or executing.lost:
            return None, None
        try:
            if self._settle(run_id):
                return Status.CANCELLED, CANCELLED_NOTE
        except LeaseLost:
            return None, None
        except StoreError as store_error:
            log.warning("could not settle run %s: %s", run_id, store_error)
        if executing.stop_note is not None:
            return Status.INTERRUPTED, executing.stop_note
        if isinstance(exc, TrainingCancelled):
            return Status.CANCELLED, CANCELLED_NOTE
        if not isinstance(exc, DistilleryError):
            log.error("run %s failed", run_id, exc_info=exc)
        return Status.FAILED, failure_message(exc)

    def _store_outcome(self, run_id: int, outcome: JobOutcome | None) -> None:
        if outcome is None:
            return
        self.store.update_run(
            run_id,
            num_params=outcome.num_params,
            checkpoint_path=outcome.checkpoint_path,
            onnx_path=outcome.onnx_path,
        )
        for split, rows in outcome.results.items():
            self.store.set_results(run_id, split, rows)

    def _end(
        self, run_id: int, executing: _Executing, status: str | None, error: str | None
    ) -> None:
        try:
            if status == Status.CANCELLED:
                # Nothing of a cancelled run is kept: no half-trained checkpoint to mistake
                # for a result.
                self.store.delete_artifacts(run_id)
                remove_path(paths.run_dir(run_id))
            elif status != Status.SUCCEEDED:
                remove_partial_files(self.store, run_id)
        except (StoreError, OSError) as exc:
            log.warning("could not clean up the files of run %s: %s", run_id, exc)
        if status is None:
            log.warning("run %s was taken over after this process lost its lease", run_id)
        else:
            log.info("run %s ended %s", run_id, status)
            try:
                self.store.set_status(run_id, status, error, owner=self.owner)
            except StoreError as exc:
                log.error("could not record the end of run %s (%s): %s", run_id, status, exc)
        self._release(run_id)

    def _release(self, run_id: int) -> None:
        """Forget a run that has ended (here or in a Ray task) and wake the waiters."""
        with self._changed:
            self._executing.pop(run_id, None)
            self._submitted.discard(run_id)
            self._touch_locked()

    # ------------------------------------------------------------ heartbeat
    def _beat(self) -> None:
        """Renew the leases of the runs executing here, pass on cancels from other
        processes, and every half lease recover runs whose owner has died."""
        next_sweep = time.monotonic() + self.lease_s / 2
        while not self._beat_stop.wait(self._heartbeat_s):
            with self._lock:
                ids = list(self._executing)
            try:
                cancelled, lost = self.store.renew_leases(self.owner, ids, self.lease_s)
                with self._lock:
                    for run_id in cancelled | lost:
                        executing = self._executing.get(run_id)
                        if executing is not None:
                            executing.lost = executing.lost or run_id in lost
                            executing.cancel.set()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.lease_s / 2
                    self.recover()
            except StoreError as exc:  # the database may come back before the lease ends
                log.warning("heartbeat failed: %s", exc)
            except BaseException:
                log.exception("heartbeat failed")
            with self._lock:
                idle = self._closed and not self._executing
            if idle and not any(t.is_alive() for t in self._threads):
                return
