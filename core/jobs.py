"""The background job manager: a queue of training runs served by worker threads.

One `JobManager` lives per server process (the app keeps it in ``st.cache_resource``).
`submit` records a run as ``queued`` and enqueues it; a worker thread picks it up, marks it
``running`` and calls the *runner* (the training pipeline) with a `JobContext`, through
which the runner reports epochs, writes files and sees cancellation. Every status change
is written to the store as it happens; pages poll the store, or the cheap in-memory
`Progress` snapshots, and never talk to the threads.

Guarantees:
- a cancel request ends the run ``cancelled`` as soon as the runner next looks at the
  cancel event (the trainer checks it between batches); a cancelled run keeps no files;
- a failing runner ends its run ``failed`` with a one-line error, and the worker goes on
  with the queue;
- files are written under a temporary name, fsynced and renamed, so a recorded artifact is
  never half-written;
- at start-up, runs a previous process left ``queued`` or ``running`` become
  ``interrupted`` and their partial files are removed.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from core import paths
from core.db import RUN_ROLES
from core.errors import ConfigError, DistilleryError, StoreError, TrainingCancelled
from core.store import ACTIVE_STATUSES, ArtifactRecord, DatasetRecord, RunRecord, Store

log = logging.getLogger(__name__)

INTERRUPTED_NOTE = "interrupted: the server stopped while this run was in progress"
SHUTDOWN_NOTE = "interrupted: the job manager shut down before this run started"
CANCELLED_NOTE = "cancelled by the user"
TEMP_MARKER = ".tmp"
# Finished runs' progress snapshots kept in memory for pages that poll after the end.
_FINISHED_PROGRESS_KEPT = 256


@dataclass(frozen=True)
class JobSpec:
    """What to train. ``config`` holds the model, training and distillation settings."""

    dataset_id: int
    role: str
    model: str
    config: dict[str, Any] = field(default_factory=dict)
    teacher_run_id: int | None = None
    name: str | None = None


ResultRows = Iterable[tuple[str, int, float | None]] | Mapping[str, float | None]


@dataclass(frozen=True)
class JobOutcome:
    """What a finished runner hands back; stored before the run is marked succeeded.

    ``results`` maps a split ("valid", "test") to ``(metric, k, value)`` rows or to a
    mapping like ``{"ndcg@10": 0.3}`` (see `Store.set_results`).
    """

    num_params: int | None = None
    checkpoint_path: str | os.PathLike[str] | None = None
    onnx_path: str | os.PathLike[str] | None = None
    results: Mapping[str, ResultRows] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """A cheap snapshot of one run for polling pages (in memory, this process only)."""

    run_id: int
    status: str
    label: str
    epoch: int = 0
    total_epochs: int | None = None
    fraction: float = 0.0
    eta_seconds: float | None = None
    loss: float | None = None
    terms: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    val_metric: float | None = None  # the headline validation metric (NDCG@10 when reported)
    message: str = ""
    updated: float = field(default_factory=time.time)


Runner = Callable[["JobContext"], "JobOutcome | None"]


def _headline(val: Mapping[str, Any]) -> float | None:
    for key in ("ndcg@10", "ndcg"):
        if isinstance(val.get(key), int | float):
            return float(val[key])
    numbers = [v for v in val.values() if isinstance(v, int | float)]
    return float(numbers[0]) if numbers else None


def _is_out_of_memory(exc: BaseException) -> bool:
    # By name and message so this module stays free of torch: torch.OutOfMemoryError (CUDA),
    # RuntimeErrors from older CUDA builds, MPS and the CPU allocator, and Python's own.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def failure_message(exc: BaseException) -> str:
    """The error stored for a failed run: one readable sentence where the cause is known.

    Distillery's own errors already are such sentences; running out of memory or disk
    space gets a sentence saying what to do; anything else keeps its type and message so
    that a bug report can name it.
    """
    if isinstance(exc, DistilleryError):
        return str(exc)
    if _is_out_of_memory(exc):
        return (
            "The run ran out of memory; lower the batch size or the model size "
            "(or train on a machine with more memory) and try again."
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            "The disk is full, so the run's files could not be written; free some space in "
            "the data directory and try again."
        )
    return f"{type(exc).__name__}: {exc}"


def _fsync_and_hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class JobContext:
    """What a runner gets: its run, its spec, the cancel event, and ways to report."""

    def __init__(
        self, manager: JobManager, run: RunRecord, spec: JobSpec, cancel_event: threading.Event
    ) -> None:
        self._manager = manager
        self.run = run
        self.spec = spec
        self.cancel_event = cancel_event
        self.store: Store = manager.store
        self._seconds: list[float] = []

    @property
    def run_id(self) -> int:
        return self.run.id

    @property
    def run_dir(self) -> Path:
        """This run's folder (created on first write)."""
        return paths.run_dir(self.run.id)

    @property
    def dataset(self) -> DatasetRecord:
        return self.store.get_dataset(self.spec.dataset_id)

    @property
    def teacher(self) -> RunRecord | None:
        if self.spec.teacher_run_id is None:
            return None
        return self.store.get_run(self.spec.teacher_run_id)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Raise `TrainingCancelled` if a cancel was requested (call between batches)."""
        if self.cancel_event.is_set():
            raise TrainingCancelled(f"Run {self.run.id} was cancelled.")

    def report(
        self,
        epoch: int,
        total_epochs: int | None,
        loss: float | None,
        terms: Mapping[str, Any] | None = None,
        val: Mapping[str, Any] | None = None,
        seconds: float = 0.0,
        eta: float | None = None,
    ) -> None:
        """Record a finished epoch in the store and in the progress snapshot.

        Raises `TrainingCancelled` instead of recording when a cancel was requested, so no
        epoch is stored after a cancel. ``eta`` defaults to the mean epoch time times the
        epochs left.
        """
        self.check_cancelled()
        self.store.add_epoch(self.run.id, epoch, loss, terms or {}, val or {}, seconds)
        self._seconds.append(float(seconds))
        if eta is None and total_epochs:
            mean = sum(self._seconds) / len(self._seconds)
            eta = max(0, total_epochs - epoch) * mean
        self._manager._update_progress(
            self.run.id,
            epoch=int(epoch),
            total_epochs=total_epochs,
            fraction=min(1.0, epoch / total_epochs) if total_epochs else 0.0,
            eta_seconds=eta,
            loss=None if loss is None else float(loss),
            terms=dict(terms or {}),
            val=dict(val or {}),
            val_metric=_headline(val or {}),
            message=f"epoch {epoch}" + (f" of {total_epochs}" if total_epochs else ""),
        )

    def set_message(self, message: str, fraction: float | None = None) -> None:
        """Show what the run is doing now (e.g. "evaluating on test")."""
        changes: dict[str, Any] = {"message": message}
        if fraction is not None:
            changes["fraction"] = max(0.0, min(1.0, float(fraction)))
        self._manager._update_progress(self.run.id, **changes)

    def artifact_path(self, name: str) -> Path:
        """The final path of the artifact ``name`` inside this run's folder."""
        relative = PurePosixPath(name.replace("\\", "/"))
        if (
            not name.strip()
            or relative.is_absolute()
            or ".." in relative.parts
            or TEMP_MARKER in relative.name
        ):
            raise ConfigError(
                f"Artifact name {name!r} is not allowed; use a plain file name such as "
                "'model.pt' (no '..', no absolute path, no '.tmp')."
            )
        return self.run_dir.joinpath(*relative.parts)

    def write_artifact(
        self, name: str, writer: Callable[[Path], None], kind: str = "file"
    ) -> ArtifactRecord:
        """Write a file atomically and record it as an artifact of this run.

        ``writer(path)`` writes to a temporary name in the same folder; the file is then
        fsynced and renamed into place, so its final name only ever holds a complete file.
        The temporary file is removed if the writer fails. Writing the same name again
        replaces the file and its record.
        """
        final = self.artifact_path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Keep the extension last: some writers pick the format from it.
        temp = final.with_name(f"{final.stem}{TEMP_MARKER}-{secrets.token_hex(4)}{final.suffix}")
        try:
            writer(temp)
            if not temp.is_file():
                raise RuntimeError(f"the writer for artifact {name!r} did not create a file")
            size, sha256 = _fsync_and_hash(temp)
            os.replace(temp, final)
            _fsync_dir(final.parent)
        except BaseException:
            _remove(temp)
            raise
        return self.store.add_artifact(self.run.id, kind, final, size, sha256)


class JobManager:
    """A queue of runs and ``workers`` daemon threads serving it (see the module doc)."""

    def __init__(
        self, store: Store, runner: Runner, workers: int = 1, *, recover: bool = True
    ) -> None:
        if workers < 1:
            raise ConfigError("The job manager needs at least one worker thread.")
        self.store = store
        self._runner = runner
        self._queue: queue.Queue[int | None] = queue.Queue()
        # Guards every dict below, and makes "pick up" vs "cancel while queued" atomic.
        self._lock = threading.Lock()
        self._specs: dict[int, JobSpec] = {}
        self._cancel_events: dict[int, threading.Event] = {}
        self._done_events: dict[int, threading.Event] = {}
        self._started: set[int] = set()
        self._progress: OrderedDict[int, Progress] = OrderedDict()
        self._closed = False
        self.recovered: list[int] = self.recover() if recover else []
        self._threads = [
            threading.Thread(target=self._work, name=f"distillery-job-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------ recovery
    def recover(self) -> list[int]:
        """Mark runs left queued/running by a previous process ``interrupted``; clean up.

        Their temporary files are removed, and so is their folder unless it holds a
        finished (recorded) artifact. Finished runs are not touched.
        """
        ids = self.store.mark_interrupted(INTERRUPTED_NOTE)
        for run_id in ids:
            self._remove_partial_files(run_id)
        if ids:
            log.warning("marked %d unfinished run(s) as interrupted: %s", len(ids), ids)
        return ids

    def _remove_partial_files(self, run_id: int) -> None:
        folder = paths.run_dir(run_id)
        if not folder.is_dir():
            return
        for temp in list(folder.rglob(f"*{TEMP_MARKER}*")):
            _remove(temp)
        finished = {a.path.resolve() for a in self.store.artifacts(run_id) if a.path.is_file()}
        if not any(p.resolve() in finished for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------ public API
    def submit(self, spec: JobSpec) -> int:
        """Validate ``spec``, record the run as queued, enqueue it; returns the run id."""
        if self._closed:
            raise ConfigError("The job manager has shut down; restart the app to train again.")
        self._validate(spec)
        run = self.store.create_run(
            spec.dataset_id,
            spec.role,
            spec.model,
            spec.config,
            teacher_run_id=spec.teacher_run_id,
            status="queued",
            name=spec.name,
        )
        with self._lock:
            self._specs[run.id] = spec
            self._cancel_events[run.id] = threading.Event()
            self._done_events[run.id] = threading.Event()
            self._progress[run.id] = Progress(
                run_id=run.id, status="queued", label=run.label, message="waiting for a worker"
            )
        self._queue.put(run.id)
        return run.id

    def _validate(self, spec: JobSpec) -> None:
        if spec.role not in RUN_ROLES:
            raise ConfigError(f"Unknown run role {spec.role!r}; use one of {', '.join(RUN_ROLES)}.")
        try:
            self.store.get_dataset(spec.dataset_id)
        except StoreError as exc:
            raise ConfigError(
                f"Dataset {spec.dataset_id} does not exist; pick or upload another dataset."
            ) from exc
        if spec.role == "student" and spec.teacher_run_id is None:
            raise ConfigError("A student run needs a teacher run; pick a finished teacher.")
        if spec.teacher_run_id is None:
            return
        try:
            teacher = self.store.get_run(spec.teacher_run_id)
        except StoreError as exc:
            raise ConfigError(
                f"Teacher run {spec.teacher_run_id} does not exist; pick a finished teacher."
            ) from exc
        if teacher.status != "succeeded":
            raise ConfigError(
                f"Teacher run {teacher.id} is {teacher.status}; a student can only learn from "
                "a teacher that has succeeded."
            )
        if teacher.dataset_id != spec.dataset_id:
            raise ConfigError(
                f"Teacher run {teacher.id} was trained on dataset {teacher.dataset_id}, not "
                f"{spec.dataset_id}; pick a teacher trained on the same dataset."
            )

    def cancel(self, run_id: int) -> bool:
        """Cancel a run: a queued one ends now, a running one at its next cancel check.

        Returns False when the run had already finished.
        """
        with self._lock:
            event = self._cancel_events.get(run_id)
            if event is not None:
                event.set()
                if run_id in self._started:
                    self._set_progress_locked(run_id, message="cancelling")
                    return True
                self.store.set_status(run_id, "cancelled", CANCELLED_NOTE)
                self._finish_locked(run_id, "cancelled")
                return True
        # Not ours (e.g. submitted before a restart): only a queued row can be ended here.
        run = self.store.get_run(run_id)
        if run.status == "queued":
            self.store.set_status(run_id, "cancelled", CANCELLED_NOTE)
            return True
        return False

    def status(self, run_id: int) -> str:
        """The run's status as stored (the source of truth)."""
        return self.store.get_run(run_id).status

    def progress(self, run_id: int) -> Progress | None:
        """The latest in-memory snapshot of a run submitted to this manager, if any."""
        with self._lock:
            return self._progress.get(run_id)

    def active(self) -> list[Progress]:
        """Snapshots of this manager's queued and running runs, oldest first."""
        with self._lock:
            return sorted(
                (p for p in self._progress.values() if p.status in ACTIVE_STATUSES),
                key=lambda p: p.run_id,
            )

    def wait(self, run_id: int, timeout: float | None = None) -> str:
        """Block until a run submitted here has finished (or ``timeout``); return its status."""
        with self._lock:
            done = self._done_events.get(run_id)
        if done is not None:
            done.wait(timeout)
        return self.status(run_id)

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Stop accepting jobs. Queued jobs still run unless ``cancel_pending``, which also
        cancels running ones. ``wait`` blocks until the workers have stopped."""
        with self._lock:
            self._closed = True
            pending = list(self._cancel_events)
        if cancel_pending:
            for run_id in pending:
                try:
                    self.cancel(run_id)
                except StoreError as exc:
                    log.warning("could not cancel run %s at shutdown: %s", run_id, exc)
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True, cancel_pending=True)

    # ------------------------------------------------------------ progress
    def _set_progress_locked(self, run_id: int, **changes: Any) -> None:
        current = self._progress.get(run_id)
        if current is not None:
            self._progress[run_id] = replace(current, updated=time.time(), **changes)

    def _update_progress(self, run_id: int, **changes: Any) -> None:
        with self._lock:
            self._set_progress_locked(run_id, **changes)

    def _finish_locked(self, run_id: int, status: str, message: str = "") -> None:
        self._set_progress_locked(
            run_id, status=status, message=message or status, eta_seconds=None
        )
        self._progress.move_to_end(run_id)
        self._cancel_events.pop(run_id, None)
        self._specs.pop(run_id, None)
        self._started.discard(run_id)
        done = self._done_events.pop(run_id, None)
        if done is not None:
            done.set()
        finished = [i for i, p in self._progress.items() if p.status not in ACTIVE_STATUSES]
        for old in finished[: max(0, len(finished) - _FINISHED_PROGRESS_KEPT)]:
            del self._progress[old]

    # ------------------------------------------------------------ workers
    def _work(self) -> None:
        while True:
            run_id = self._queue.get()
            if run_id is None:
                return
            try:
                self._serve(run_id)
            except BaseException:  # the worker must outlive any single run
                log.exception("job worker failed while handling run %s", run_id)

    def _pick_up(self, run_id: int) -> tuple[RunRecord, JobSpec, threading.Event] | None:
        with self._lock:
            event = self._cancel_events.get(run_id)
            spec = self._specs.get(run_id)
            if event is None or spec is None or event.is_set():
                return None  # cancelled while queued: already ended by cancel()
            try:
                run = self.store.set_status(run_id, "running")
            except StoreError as exc:
                log.warning("run %s could not start: %s", run_id, exc)
                self._finish_locked(run_id, "failed", str(exc))
                return None
            self._started.add(run_id)
            self._set_progress_locked(run_id, status="running", message="starting")
            return run, spec, event

    def _serve(self, run_id: int) -> None:
        picked = self._pick_up(run_id)
        if picked is None:
            return
        run, spec, cancel_event = picked
        status, error = "succeeded", None
        try:
            outcome = self._runner(JobContext(self, run, spec, cancel_event))
            if self._settle(run_id, cancel_event):
                raise TrainingCancelled(CANCELLED_NOTE)
            self._store_outcome(run_id, outcome)
        except BaseException as exc:
            if self._settle(run_id, cancel_event) or isinstance(exc, TrainingCancelled):
                status, error = "cancelled", CANCELLED_NOTE
            else:
                status = "failed"
                error = failure_message(exc)
                if not isinstance(exc, DistilleryError):
                    log.exception("run %s failed", run_id)
        self._end(run_id, status, error)

    def _settle(self, run_id: int, cancel_event: threading.Event) -> bool:
        """Whether the run was cancelled, decided once: a later `cancel` returns False.

        Without this, a cancel arriving between the runner's return and the final status
        would report success to the caller while the run still ended succeeded or failed.
        """
        with self._lock:
            self._cancel_events.pop(run_id, None)
            return cancel_event.is_set()

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

    def _end(self, run_id: int, status: str, error: str | None) -> None:
        try:
            if status == "cancelled":
                # Nothing of a cancelled run is kept: no half-trained checkpoint to mistake
                # for a result.
                self.store.delete_artifacts(run_id)
                _remove(paths.run_dir(run_id))
            elif status == "failed":
                self._remove_partial_files(run_id)
        except (StoreError, OSError) as exc:
            log.warning("could not clean up the files of run %s: %s", run_id, exc)
        try:
            self.store.set_status(run_id, status, error)
        except StoreError as exc:
            log.error("could not record the end of run %s (%s): %s", run_id, status, exc)
        with self._lock:
            self._finish_locked(run_id, status, error or "")
