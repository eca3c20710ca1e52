"""Fault scenarios against the real store, job manager and training runner.

Shared by tests/test_faults.py and bench/reliability.py. Each scenario takes an empty data
directory (``DISTILLERY_HOME`` must already point at it), injects one fault, checks with
plain ``assert`` that the system survived it as promised (a readable error in the store,
nothing half-written, the worker still serving) and returns a few facts for reports.
Faults are injected with ``unittest.mock.patch`` so that the same code runs under pytest
and in the benchmark.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from core import paths
from core.distill import DistillConfig
from core.errors import StoreError
from core.ingestion.registry import register_dataset
from core.job_context import INTERRUPTED_NOTE, JobContext, JobOutcome
from core.jobs import JobManager
from core.models import ModelConfig, Recommender
from core.models.mf import MF
from core.pipeline import RunSpec, load_demo_dataset, popularity_spec
from core.records import JobSpec
from core.runner import run_model, submit_run, training_runner
from core.store import Store
from core.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent.parent
WAIT_S = 60  # upper bound for waits that end long before when things work
TINY_SCALE = 0.05
MF_TEACHER = RunSpec(
    name="mf-teacher",
    role="teacher",
    model=ModelConfig(family="mf", dim=8),
    train=TrainConfig(epochs=1, batch_size=512),
)
MF_STUDENT = RunSpec(
    name="student",
    role="student",
    model=ModelConfig(family="mf", dim=4),
    train=MF_TEACHER.train,
    distill=DistillConfig(method="soft"),
)


def mf_demo_plan():
    """A demo plan of tiny MF runs: popularity and the teacher, then a soft-distilled
    student and its twin (the same student trained without the teacher)."""
    from core.views.forms import DemoPlan

    twin = RunSpec("twin", "baseline", MF_STUDENT.model, MF_STUDENT.train)
    return DemoPlan(popularity=popularity_spec(), teacher=MF_TEACHER, students=(MF_STUDENT, twin))


OOM_SENTENCE = "The run ran out of memory; lower the batch size or the model size"
DISK_FULL_SENTENCE = "The disk is full, so the run's files could not be written"


def temp_files() -> list[Path]:
    """Temporary (half-written) files anywhere in the data directory."""
    return sorted(p for p in paths.data_dir().rglob("*.tmp*"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_dataset(store: Store) -> int:
    return register_dataset(store, load_demo_dataset(scale=TINY_SCALE), source="demo shop").id


def assert_loadable(store: Store, run_id: int) -> None:
    """A succeeded run's checkpoint is recorded, intact and loads into a model."""
    run = store.get_run(run_id)
    assert run.status == "succeeded", (run.status, run.error)
    (artifact,) = store.artifacts(run_id)
    assert artifact.path == run.checkpoint_path and artifact.path.is_file()
    assert (
        artifact.sha256 == sha256(artifact.path) and artifact.bytes == artifact.path.stat().st_size
    )
    assert run_model(store, run).num_parameters() == run.num_params
    assert "ndcg@10" in store.results(run_id)


def assert_failed_cleanly(store: Store, run_id: int, error_start: str) -> str:
    """A failed run: the expected one-sentence error, no files, no checkpoint."""
    run = store.get_run(run_id)
    assert run.status == "failed", (run.status, run.error)
    assert run.error is not None and run.error.startswith(error_start), run.error
    assert "\n" not in run.error and "Traceback" not in run.error
    assert run.checkpoint_path is None and store.artifacts(run_id) == []
    assert not paths.run_dir(run_id).exists()
    assert temp_files() == []
    return run.error


def healthy_run_succeeds(store: Store, manager: JobManager, dataset_id: int) -> int:
    """The worker keeps serving: a fresh popularity run trains, saves and loads."""
    run_id = submit_run(manager, dataset_id, popularity_spec())
    assert manager.wait(run_id, WAIT_S) == "succeeded", store.get_run(run_id).error
    assert_loadable(store, run_id)
    return run_id


# --------------------------------------------------------------------------- SIGKILL
def wait_for_expired_leases(store: Store, run_ids: set[int]) -> None:
    """Until the leases of ``run_ids`` have run out (their process is gone)."""
    deadline = time.monotonic() + WAIT_S
    while not run_ids <= set(store.expired_runs()):
        assert time.monotonic() < deadline, f"the leases of {sorted(run_ids)} never ran out"
        time.sleep(0.05)


def sigkill_mid_training(home: Path) -> dict[str, Any]:
    """Kill a server (SIGKILL) with one run training, one mid-save and one queued; once
    their leases have run out, the next process recovers the two and runs the queued one."""
    env = dict(os.environ, PYTHONPATH=str(REPO), DISTILLERY_HOME=str(home))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.kill_real_training"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(WAIT_S, process.kill)  # never leave a stuck helper behind
    watchdog.start()
    milestones: dict[str, int] = {}
    try:
        while not {"RUNNING", "SAVING"} <= milestones.keys():
            line = process.stdout.readline()
            assert line, f"the helper exited early: {process.stderr.read()[-2000:]}"
            word, run_id = line.split()
            milestones[word] = int(run_id)
        stuck_dir = paths.run_dir(milestones["SAVING"])
        assert [p.name.startswith("model.tmp-") for p in stuck_dir.iterdir()] == [True]
        process.send_signal(signal.SIGKILL)
        assert process.wait(WAIT_S) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        process.kill()
        process.stdout.close()
        process.stderr.close()

    done, long, stuck, queued = (milestones[k] for k in ("FINISHED", "RUNNING", "SAVING", "QUEUED"))
    with Store() as store:
        # A process that merely starts never touches runs whose lease is still good.
        assert {store.get_run(i).status for i in (long, stuck)} == {"running"}
        wait_for_expired_leases(store, {long, stuck})
        with JobManager(store, training_runner) as manager:
            assert manager.recovered == sorted([long, stuck])
            assert_loadable(store, done)
            for run_id in (long, stuck):
                run = store.get_run(run_id)
                assert (run.status, run.error) == ("interrupted", INTERRUPTED_NOTE)
                assert run.checkpoint_path is None and store.artifacts(run_id) == []
                assert not paths.run_dir(run_id).exists()
            assert len(store.epochs(long)) >= 1  # history up to the kill is kept
            # The queued run was never started: it stays queued, and this process runs it.
            assert manager.wait(queued, WAIT_S) == "succeeded", store.get_run(queued).error
            assert_loadable(store, queued)
            assert temp_files() == []
            assert sorted(p.name for p in paths.runs_dir().iterdir()) == [
                paths.run_dir(done).name,
                paths.run_dir(queued).name,
            ]
            fresh = healthy_run_succeeds(store, manager, store.get_run(done).dataset_id)
    return {"interrupted": [long, stuck], "queued_served": queued, "fresh_run": fresh}


# --------------------------------------------------------------------------- database lock
class WriterHoldingTheLock:
    """Another process's writer: a raw sqlite3 connection inside BEGIN IMMEDIATE."""

    def __init__(self, db: Path, hold_s: float | None) -> None:
        self.db, self.hold_s = db, hold_s
        self.locked, self.release = threading.Event(), threading.Event()
        self.released_at: float | None = None
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        connection = sqlite3.connect(self.db, isolation_level=None, timeout=WAIT_S)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("UPDATE datasets SET name = name")  # a real pending write
            self.locked.set()
            self.release.wait(self.hold_s if self.hold_s is not None else WAIT_S)
            self.released_at = time.monotonic()
            connection.execute("COMMIT")
        finally:
            connection.close()

    def __enter__(self) -> WriterHoldingTheLock:
        self.thread.start()
        assert self.locked.wait(WAIT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(WAIT_S)


def _store_with_a_run(store: Store) -> int:
    dataset = store.add_dataset(
        name="tiny", source="test", content_hash="lock", n_users=2, n_items=2, n_interactions=4
    )
    return store.create_run(dataset.id, "teacher", "mf", {}, status="running").id


def db_locked_briefly(home: Path, hold_s: float = 2.0) -> dict[str, Any]:
    """Another writer holds the lock for ``hold_s``: reads go on, writes wait and succeed."""
    with Store() as store:
        run_id = _store_with_a_run(store)
        with WriterHoldingTheLock(paths.default_db_path(), hold_s) as writer:
            assert store.get_run(run_id).status == "running"  # WAL: readers never wait
            assert writer.released_at is None
            store.add_epoch(run_id, 1, 0.5, {"task": 0.5}, {"ndcg@10": 0.1})
            store.set_results(run_id, "test", {"ndcg@10": 0.1, "hr@10": 0.2, "coverage": 0.3})
            finished = time.monotonic()
            # The writes returned only after the other writer let go: they waited.
            assert writer.released_at is not None and finished >= writer.released_at
        assert [e.epoch for e in store.epochs(run_id)] == [1]
        assert store.results(run_id) == {"ndcg@10": 0.1, "hr@10": 0.2, "coverage": 0.3}
    return {"held_s": hold_s}


def db_locked_too_long(home: Path, busy_timeout_s: float = 0.3) -> dict[str, Any]:
    """The lock outlasts the busy timeout: writes fail with a sentence, nothing half-written."""
    with mock.patch("core.engine.BUSY_TIMEOUT_S", busy_timeout_s), Store() as store:
        run_id = _store_with_a_run(store)
        data = load_demo_dataset(scale=TINY_SCALE)
        messages = []
        with WriterHoldingTheLock(paths.default_db_path(), None):
            for write in (
                lambda: store.set_results(run_id, "test", {"ndcg@10": 0.1, "hr@10": 0.2}),
                lambda: store.add_epoch(run_id, 1, 0.5),
                lambda: register_dataset(store, data, source="demo shop"),
            ):
                try:
                    write()
                except StoreError as exc:
                    messages.append(str(exc))
                else:
                    raise AssertionError("a write went through while the database was locked")
            assert store.results(run_id) == {} and store.epochs(run_id) == []
            assert len(store.list_datasets()) == 1  # only the one made before the lock
            # The Parquet copy written before the failed insert is gone again.
            assert list(paths.datasets_dir().iterdir()) == []
        for message in messages:
            assert message.startswith("The run store could not "), message
            assert "(database is locked); please try again." in message, message
        # Once the other writer is done, the same writes succeed.
        store.set_results(run_id, "test", {"ndcg@10": 0.1, "hr@10": 0.2})
        register_dataset(store, data, source="demo shop")
        assert store.results(run_id) == {"ndcg@10": 0.1, "hr@10": 0.2}
        assert len(store.list_datasets()) == 2
    return {"messages": messages}


# --------------------------------------------------------------------------- training faults
def disk_full_while_saving(home: Path) -> dict[str, Any]:
    """The checkpoint writer hits ENOSPC half-way: run failed, no partial file, worker serves."""
    real_save = Recommender.save
    calls = []

    def save_until_the_disk_is_full(self: Recommender, path) -> None:
        calls.append(path)
        if len(calls) == 1:
            real_save(self, path)
            size = Path(path).stat().st_size
            with open(path, "r+b") as handle:  # what a full disk leaves: half a file
                handle.truncate(size // 2)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(self, path)

    with Store() as store, JobManager(store, training_runner) as manager:
        dataset_id = tiny_dataset(store)
        with mock.patch.object(Recommender, "save", save_until_the_disk_is_full):
            failed = submit_run(manager, dataset_id, MF_TEACHER)
            assert manager.wait(failed, WAIT_S) == "failed"
            error = assert_failed_cleanly(store, failed, DISK_FULL_SENTENCE)
            assert Path(calls[0]).name.startswith("model.tmp-") and not Path(calls[0]).exists()
            healthy = healthy_run_succeeds(store, manager, dataset_id)
    return {"error": error, "next_run": healthy}


def _mf_step_with(fault):
    real_step = MF.training_step

    def step(self, batch):
        return fault(real_step(self, batch))

    return step


def nan_loss(home: Path) -> dict[str, Any]:
    """A loss that turns NaN, and a learning rate no optimiser survives: readable errors."""
    from dataclasses import replace

    def poison(out):
        return replace(out, task_loss=out.task_loss * float("nan"))

    with Store() as store, JobManager(store, training_runner) as manager:
        dataset_id = tiny_dataset(store)
        with mock.patch.object(MF, "training_step", _mf_step_with(poison)):
            diverged = submit_run(manager, dataset_id, MF_TEACHER)
            assert manager.wait(diverged, WAIT_S) == "failed"
        nan_error = assert_failed_cleanly(
            store, diverged, "The loss became nan in epoch 1, batch 1"
        )
        assert "lower the learning rate" in nan_error
        absurd = replace(MF_TEACHER, train=replace(MF_TEACHER.train, lr=1e38))
        rejected = submit_run(manager, dataset_id, absurd)
        assert manager.wait(rejected, WAIT_S) == "failed"
        lr_error = assert_failed_cleanly(store, rejected, "The learning rate must be a number")
        healthy = healthy_run_succeeds(store, manager, dataset_id)
    return {"errors": [nan_error, lr_error], "next_run": healthy}


OOM_FAULTS = {
    "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    "cpu": lambda: RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 80000000000 bytes."
    ),
    "python": MemoryError,
}


def out_of_memory(home: Path) -> dict[str, Any]:
    """Out of memory in a training step (CUDA, CPU allocator, Python): one sentence each."""
    errors = {}
    with Store() as store, JobManager(store, training_runner) as manager:
        dataset_id = tiny_dataset(store)
        for kind, make in OOM_FAULTS.items():

            def explode(_out, make=make):
                raise make()

            with mock.patch.object(MF, "training_step", _mf_step_with(explode)):
                run_id = submit_run(manager, dataset_id, MF_TEACHER)
                assert manager.wait(run_id, WAIT_S) == "failed"
            errors[kind] = assert_failed_cleanly(store, run_id, OOM_SENTENCE)
        healthy = healthy_run_succeeds(store, manager, dataset_id)
    return {"errors": errors, "next_run": healthy}


class _Exploit:
    """A pickle that would run a command if anything unpickled it without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def teacher_checkpoint_lost(home: Path) -> dict[str, Any]:
    """The teacher's checkpoint is deleted, corrupted or replaced by a malicious pickle
    before a student loads it: the student fails with a sentence, the worker serves on."""
    from dataclasses import replace

    marker = home / "exploit-ran"
    student = MF_STUDENT
    errors = {}
    with Store() as store, JobManager(store, training_runner) as manager:
        dataset_id = tiny_dataset(store)
        teacher = submit_run(manager, dataset_id, MF_TEACHER)
        assert manager.wait(teacher, WAIT_S) == "succeeded", store.get_run(teacher).error
        checkpoint = store.get_run(teacher).checkpoint_path
        good_bytes = checkpoint.read_bytes()

        def corrupt() -> None:
            checkpoint.write_bytes(good_bytes[: len(good_bytes) // 3])

        def malicious() -> None:
            torch.save({"config_json": "{}", "state_dict": _Exploit(marker)}, checkpoint)

        for kind, damage in (
            ("deleted", checkpoint.unlink),
            ("truncated", corrupt),
            ("malicious pickle", malicious),
        ):
            damage()
            run_id = submit_run(manager, dataset_id, replace(student, name=kind), teacher)
            assert manager.wait(run_id, WAIT_S) == "failed"
            errors[kind] = assert_failed_cleanly(
                store, run_id, f"The checkpoint of run #{teacher} "
            )
        assert "is missing from the data directory" in errors["deleted"]
        assert "cannot be read" in errors["truncated"]
        assert "cannot be read" in errors["malicious pickle"]
        assert not marker.exists()  # weights_only refused the pickle before it could run
        healthy = healthy_run_succeeds(store, manager, dataset_id)
    return {"errors": errors, "next_run": healthy}


def malicious_pickle_refused(home: Path) -> dict[str, Any]:
    """core.models.load_model never executes a pickle's __reduce__."""
    from core.models import load_model

    marker = home / "exploit-ran"
    refused = []
    for payload in (
        lambda p: torch.save({"state_dict": _Exploit(marker)}, p),
        lambda p: p.write_bytes(pickle.dumps(_Exploit(marker), protocol=2)),
    ):
        path = home / "evil.pt"
        payload(path)
        try:
            load_model(path)
        except pickle.UnpicklingError as exc:
            refused.append(type(exc).__name__)
        assert not marker.exists()
    assert refused == ["UnpicklingError", "UnpicklingError"]
    return {"refused": refused}


# --------------------------------------------------------------------------- concurrency
class ToyRunner:
    """Fits y = x @ w in a few small epochs, checkpointing every epoch; may fail on purpose.

    It records every epoch it reported and flags any report that went through although
    the run had already been cancelled (the store must refuse those).
    """

    def __init__(self) -> None:
        self.reported: dict[int, list[int]] = defaultdict(list)
        self.started: set[int] = set()
        self.violations: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, ctx: JobContext) -> JobOutcome:
        config = ctx.spec.config
        with self._lock:
            self.started.add(ctx.run_id)
        generator = torch.Generator().manual_seed(config["seed"])
        x = torch.randn(24, 3, generator=generator)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        epochs = config["epochs"]
        for epoch in range(1, epochs + 1):
            for rows in (slice(0, 8), slice(8, 16), slice(16, 24)):
                ctx.check_cancelled()
                loss = torch.nn.functional.mse_loss(model(x[rows]), y[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                time.sleep(0.001)
            if config.get("fail_at") == epoch:
                raise ValueError("failed on purpose")
            was_cancelled = ctx.cancel_event.is_set()
            mse = loss.item()
            ctx.report(epoch, epochs, mse, {"mse": mse}, {"ndcg@10": 0.5})
            if was_cancelled:
                self.violations.append(f"run {ctx.run_id} stored epoch {epoch} after a cancel")
            with self._lock:
                self.reported[ctx.run_id].append(epoch)
            ctx.write_artifact(
                "model.pt", lambda p: torch.save(model.state_dict(), p), "checkpoint"
            )
        return JobOutcome(
            num_params=4,
            checkpoint_path=ctx.artifact_path("model.pt"),
            results={"test": {"mse": loss.item()}},
        )


@dataclass
class ConcurrencyReport:
    rounds: int = 0
    runs: int = 0
    cancels: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    inconsistencies: list[str] = field(default_factory=list)


def _check_run(store: Store, runner: ToyRunner, run_id: int, cancel_took: bool | None) -> list[str]:
    problems = []
    run = store.get_run(run_id)
    where = f"run {run_id} ({run.status})"
    epochs = [e.epoch for e in store.epochs(run_id)]
    artifacts = store.artifacts(run_id)
    folder = paths.run_dir(run_id)
    if run.status not in ("succeeded", "failed", "cancelled"):
        problems.append(f"{where} did not end")
    if epochs != list(range(1, len(epochs) + 1)):
        problems.append(f"{where} has epochs {epochs}")
    if epochs != runner.reported.get(run_id, []):
        problems.append(f"{where} stored epochs {epochs}, reported {runner.reported.get(run_id)}")
    if any(e.created > run.finished for e in store.epochs(run_id)):
        problems.append(f"{where} has an epoch stored after it finished")
    if cancel_took is True and run.status != "cancelled":
        problems.append(f"{where}: cancel() said it would cancel")
    if cancel_took is False and run.status == "cancelled":
        problems.append(f"{where}: cancel() said it was too late")
    if run.status == "succeeded":
        paths_ok = len(artifacts) == 1 and artifacts[0].path == run.checkpoint_path
        if not paths_ok or not run.checkpoint_path.is_file():
            problems.append(f"{where} has no checkpoint")
        elif artifacts[0].sha256 != sha256(run.checkpoint_path):
            problems.append(f"{where} checkpoint does not match its sha256")
        if store.results(run_id) == {} or len(epochs) != 3:
            problems.append(f"{where} is missing results or epochs")
    elif run.status == "failed":
        # A failed run may keep checkpoints it finished before failing (recorded, intact),
        # but never becomes loadable as a result.
        if run.checkpoint_path is not None or store.results(run_id):
            problems.append(f"{where} has a checkpoint path or results")
        if any(not a.path.is_file() or a.sha256 != sha256(a.path) for a in artifacts):
            problems.append(f"{where} kept a recorded file that is missing or changed")
    else:
        if artifacts or folder.exists() or run.checkpoint_path is not None:
            problems.append(f"{where} kept files")
        if store.results(run_id):
            problems.append(f"{where} has results")
    if run.status == "cancelled" and run.started is None and run_id in runner.started:
        problems.append(f"{where} was cancelled while queued but still ran")
    if run.status == "failed" and run.error != "ValueError: failed on purpose":
        problems.append(f"{where} failed with {run.error!r}")
    return problems


def concurrent_cancels(
    home: Path, rounds: int = 20, seed: int = 0, runs_per_round: int = 4
) -> ConcurrencyReport:
    """Four runs on two workers, random cancels at random moments, ``rounds`` times."""
    report = ConcurrencyReport()
    rng = random.Random(seed)
    with Store() as store:
        dataset = store.add_dataset(
            name="toy", source="test", content_hash="toy", n_users=4, n_items=5, n_interactions=20
        )
        runner = ToyRunner()
        for _ in range(rounds):
            manager = JobManager(store, runner, workers=2, recover=False)
            ids = []
            for j in range(runs_per_round):
                config = {"seed": rng.randrange(1000), "epochs": 3}
                if rng.random() < 0.2:
                    config["fail_at"] = rng.randint(1, 3)
                ids.append(
                    manager.submit(JobSpec(dataset.id, "teacher", "toy", config, name=f"r{j}"))
                )
            plan = sorted((rng.uniform(0, 0.12), run_id) for run_id in ids if rng.random() < 0.5)
            took: dict[int, bool] = {}
            start = time.monotonic()
            for delay, run_id in plan:
                time.sleep(max(0.0, start + delay - time.monotonic()))
                took[run_id] = manager.cancel(run_id)
            for run_id in ids:
                manager.wait(run_id, WAIT_S)
            manager.shutdown(wait=True)
            report.rounds += 1
            report.runs += len(ids)
            report.cancels += len(plan)
            for run_id in ids:
                report.statuses[store.get_run(run_id).status] += 1
                report.inconsistencies += _check_run(store, runner, run_id, took.get(run_id))
            if temp_files():
                report.inconsistencies.append(f"temporary files left: {temp_files()}")
        report.inconsistencies += runner.violations
    report.statuses = dict(report.statuses)
    return report


SCENARIOS = {
    "sigkill_mid_training": sigkill_mid_training,
    "db_locked_briefly": db_locked_briefly,
    "db_locked_too_long": db_locked_too_long,
    "disk_full_while_saving": disk_full_while_saving,
    "nan_loss": nan_loss,
    "out_of_memory": out_of_memory,
    "teacher_checkpoint_lost": teacher_checkpoint_lost,
    "malicious_pickle_refused": malicious_pickle_refused,
}
