"""The runner's side of a job: what it is given, how it reports, and what it hands back.

A `JobManager` (core.jobs) calls its *runner* (the training pipeline) with a `JobContext`:
the run and its spec, the cancel event, and the ways to report (an epoch, a progress line)
and to write files atomically (temporary name, fsync, rename, recorded as an artifact).
The runner returns a `JobOutcome`, stored before the run is marked succeeded. `Progress`
is the snapshot of any run that pages poll, read from the store. `failure_message` turns
whatever a runner raised into the one sentence stored as the run's error.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from core import paths
from core.enums import TERMINAL_STATUSES, Role, Status, choice_list
from core.errors import ConfigError, DistilleryError, StoreError, TrainingCancelled
from core.leases import LeaseLost
from core.records import ArtifactRecord, DatasetRecord, JobSpec, RunRecord

if TYPE_CHECKING:
    from core.jobs import JobManager
    from core.store import Store

log = logging.getLogger(__name__)

INTERRUPTED_NOTE = "interrupted: the process running it stopped while it was in progress"
STOPPED_NOTE = "interrupted: its worker was stopped while it was in progress"
CANCELLED_NOTE = "cancelled by the user"
TEMP_MARKER = ".tmp"


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
    """A snapshot of one run for polling pages, read from the store (any process's run)."""

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

    @classmethod
    def of(cls, run: RunRecord) -> Progress:
        """The progress of a stored run, from the snapshot its owner last wrote."""
        stored = {k: v for k, v in run.progress.items() if k in _SNAPSHOT_FIELDS}
        progress = cls(run_id=run.id, status=run.status, label=run.label, **stored)
        if run.status == Status.QUEUED:
            return _replace(progress, message="waiting for a worker")
        if run.status == Status.WAITING:
            return _replace(
                progress, message=f"waiting for run #{run.depends_on_run_id} to succeed"
            )
        if run.status in TERMINAL_STATUSES:
            done = 1.0 if run.status == Status.SUCCEEDED else progress.fraction
            return _replace(
                progress, message=run.error or run.status, eta_seconds=None, fraction=done
            )
        return progress


_SNAPSHOT_FIELDS = frozenset(f.name for f in fields(Progress)) - {"run_id", "status", "label"}


def _replace(progress: Progress, **changes: Any) -> Progress:
    return Progress(**{**{f.name: getattr(progress, f.name) for f in fields(Progress)}, **changes})


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


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_partial_files(store: Store, run_id: int) -> None:
    """Delete a run's temporary files, and its folder unless it holds a recorded artifact."""
    folder = paths.run_dir(run_id)
    if not folder.is_dir():
        return
    for temp in list(folder.rglob(f"*{TEMP_MARKER}*")):
        remove_path(temp)
    finished = {a.path.resolve() for a in store.artifacts(run_id) if a.path.is_file()}
    if not any(p.resolve() in finished for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def check_spec(store: Store, spec: JobSpec) -> None:
    """Refuse, with one sentence, a run that cannot start: an unknown role or dataset, or a
    student whose teacher is missing, unfinished or trained on another dataset."""
    if spec.role not in set(Role):
        raise ConfigError(f"Unknown run role {spec.role!r}; use one of {choice_list(Role)}.")
    try:
        store.get_dataset(spec.dataset_id)
    except StoreError as exc:
        raise ConfigError(
            f"Dataset {spec.dataset_id} does not exist; pick or upload another dataset."
        ) from exc
    if spec.role == Role.STUDENT and spec.teacher_run_id is None:
        raise ConfigError("A student run needs a teacher run; pick a finished teacher.")
    if spec.teacher_run_id is None:
        return
    try:
        teacher = store.get_run(spec.teacher_run_id)
    except StoreError as exc:
        raise ConfigError(
            f"Teacher run {spec.teacher_run_id} does not exist; pick a finished teacher."
        ) from exc
    if teacher.status != Status.SUCCEEDED:
        raise ConfigError(
            f"Teacher run {teacher.id} is {teacher.status}; a student can only learn from "
            "a teacher that has succeeded."
        )
    if teacher.dataset_id != spec.dataset_id:
        raise ConfigError(
            f"Teacher run {teacher.id} was trained on dataset {teacher.dataset_id}, not "
            f"{spec.dataset_id}; pick a teacher trained on the same dataset."
        )


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
        self._progress: dict[str, Any] = {"message": "starting"}

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
        """The teacher's record; its checkpoint must be one the store lists in the data
        directory (a worker never loads a file a row merely points at)."""
        if self.spec.teacher_run_id is None:
            return None
        record = self.store.get_run(self.spec.teacher_run_id)
        self.store.listed_checkpoint(record)
        return record

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
        """Record a finished epoch and the progress snapshot in the store.

        Raises `TrainingCancelled` instead of recording when a cancel was requested (here
        or in any other process), so no epoch is stored after a cancel. ``eta`` defaults to
        the mean epoch time times the epochs left.
        """
        self.check_cancelled()
        self._seconds.append(float(seconds))
        if eta is None and total_epochs:
            mean = sum(self._seconds) / len(self._seconds)
            eta = max(0, total_epochs - epoch) * mean
        snapshot = self._snapshot(
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
        try:
            self.store.add_epoch(
                self.run.id,
                epoch,
                loss,
                terms or {},
                val or {},
                seconds,
                owner=self._manager.owner,
                progress=snapshot,
            )
        except TrainingCancelled:
            self.cancel_event.set()
            raise

    def keep_training_notes(self, notes: Iterable[str]) -> None:
        """What training noted about the run (how the teacher's outputs were kept, the task
        loss used): stored with the next progress snapshot, read by the Runs page."""
        self._progress["training_notes"] = [str(note) for note in notes]

    def set_message(self, message: str, fraction: float | None = None) -> None:
        """Show what the run is doing now (e.g. "evaluating on test")."""
        changes: dict[str, Any] = {"message": message}
        if fraction is not None:
            changes["fraction"] = max(0.0, min(1.0, float(fraction)))
        snapshot = self._snapshot(**changes)
        try:
            if self.store.set_progress(self.run.id, self._manager.owner, snapshot):
                self.cancel_event.set()
        except LeaseLost:
            raise
        except StoreError as exc:  # a progress line is not worth failing a run for
            log.warning("could not save the progress of run %s: %s", self.run.id, exc)

    def _snapshot(self, **changes: Any) -> dict[str, Any]:
        self._progress.update(changes, updated=time.time())
        return dict(self._progress)

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
            remove_path(temp)
            raise
        return self.store.add_artifact(self.run.id, kind, final, size, sha256)
