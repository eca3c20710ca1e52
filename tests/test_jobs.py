"""Tests for core.jobs: the job queue, cancellation, failures, atomic artifacts, recovery,
and several job managers sharing one store (leases, cancels and progress across them).

Every test runs on SQLite and on PostgreSQL (the ``store_url`` fixture in conftest.py).
The runner is a real (tiny) training loop: a torch linear regression trained for a few
epochs of a few batches, checking the cancel event between batches and reporting every
epoch, as the real trainer does. Mid-run cancellation is made deterministic with Events:
a run pauses after a chosen epoch until the test has cancelled it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from sqlalchemy import text

from core import paths
from core.errors import ConfigError, TrainingDiverged
from core.job_context import INTERRUPTED_NOTE, STOPPED_NOTE, JobContext, JobOutcome
from core.jobs import JobManager
from core.records import JobSpec
from core.store import Store

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 30  # generous upper bounds for Event waits; never reached when things work


@pytest.fixture
def store(store_url: str, db_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if db_backend == "sqlite":  # a SQLite file outside the data directory works as well
        monkeypatch.setenv("DISTILLERY_DB_URL", f"sqlite:///{tmp_path / 'runs.db'}")
    with Store() as opened:
        yield opened


@pytest.fixture
def dataset_id(store: Store) -> int:
    return store.add_dataset(
        name="tiny", source="test", content_hash="tiny", n_users=4, n_items=5, n_interactions=20
    ).id


class LinearRegressionRunner:
    """Trains y = x @ w with SGD. ``config``: epochs, batches, pause_after_epoch, fail_at_epoch,
    diverge_at_epoch. Pausing sets ``reached[name]`` and waits for the cancel event."""

    def __init__(self) -> None:
        self.reached: dict[str, threading.Event] = {}
        self.called: list[str | None] = []
        self.batches_after_cancel: dict[int, int] = {}

    def pause_point(self, name: str) -> threading.Event:
        return self.reached.setdefault(name, threading.Event())

    def __call__(self, ctx: JobContext) -> JobOutcome:
        config = ctx.spec.config
        self.called.append(ctx.spec.name)
        epochs, batches, size = config.get("epochs", 3), config.get("batches", 4), 8
        generator = torch.Generator().manual_seed(config.get("seed", 0))
        x = torch.randn(batches * size, 3, generator=generator)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(1, epochs + 1):
            total = 0.0
            for batch in range(batches):
                ctx.check_cancelled()
                rows = slice(batch * size, (batch + 1) * size)
                loss = torch.nn.functional.mse_loss(model(x[rows]), y[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            if config.get("fail_at_epoch") == epoch:
                raise ValueError("loss exploded on purpose")
            if config.get("diverge_at_epoch") == epoch:
                raise TrainingDiverged(
                    f"The loss became NaN in epoch {epoch}; lower the learning rate."
                )
            mse = total / batches
            ctx.report(epoch, epochs, mse, {"mse": mse}, {"ndcg@10": 1 / (1 + mse)}, seconds=0.5)
            ctx.write_artifact(
                "model.pt", lambda p: torch.save(model.state_dict(), p), kind="checkpoint"
            )
            if config.get("pause_after_epoch") == epoch:
                self.pause_point(ctx.spec.name).set()
                assert ctx.cancel_event.wait(WAIT_S), "the test never cancelled this run"
        return JobOutcome(
            num_params=sum(p.numel() for p in model.parameters()),
            checkpoint_path=ctx.artifact_path("model.pt"),
            results={"test": [("mse", 0, mse)], "valid": {"ndcg@10": 1 / (1 + mse)}},
        )


def spec(dataset_id: int, name: str, **config) -> JobSpec:
    return JobSpec(dataset_id=dataset_id, role="teacher", model="linear", config=config, name=name)


def temp_files() -> list[Path]:
    return sorted(paths.runs_dir().rglob("*.tmp*"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_finished_cleanly(store: Store, run_id: int, epochs: int) -> None:
    run = store.get_run(run_id)
    assert run.status == "succeeded" and run.error is None
    assert run.num_params == 4  # 3 weights + 1 bias
    history = store.epochs(run_id)
    assert [e.epoch for e in history] == list(range(1, epochs + 1))
    assert history[-1].loss < history[0].loss  # it really trained
    assert history[-1].val_ndcg == pytest.approx(1 / (1 + history[-1].loss))
    (artifact,) = store.artifacts(run_id)
    assert artifact.path == run.checkpoint_path == paths.run_dir(run_id) / "model.pt"
    assert artifact.bytes == artifact.path.stat().st_size
    assert artifact.sha256 == sha256(artifact.path)
    state = torch.load(artifact.path, weights_only=True)
    assert set(state) == {"weight", "bias"}
    assert store.results(run_id) == {"mse": pytest.approx(history[-1].loss)}
    assert store.results(run_id, "valid") == {"ndcg@10": pytest.approx(history[-1].val_ndcg)}


def assert_cancelled_cleanly(store: Store, run_id: int, epochs: list[int]) -> None:
    run = store.get_run(run_id)
    assert run.status == "cancelled" and run.error == "cancelled by the user"
    assert run.finished is not None and run.checkpoint_path is None
    assert [e.epoch for e in store.epochs(run_id)] == epochs
    assert store.artifacts(run_id) == []
    assert store.results(run_id) == {}
    assert not paths.run_dir(run_id).exists()


# --------------------------------------------------------------------------- queue
def test_four_jobs_two_cancelled_mid_run(store, dataset_id):
    runner = LinearRegressionRunner()
    with JobManager(store, runner, workers=2) as manager:
        a = manager.submit(spec(dataset_id, "a", pause_after_epoch=2))
        b = manager.submit(spec(dataset_id, "b", pause_after_epoch=1, epochs=4))
        c = manager.submit(spec(dataset_id, "c"))
        d = manager.submit(spec(dataset_id, "d", epochs=2))
        assert runner.pause_point("a").wait(WAIT_S) and runner.pause_point("b").wait(WAIT_S)

        # Both workers are busy: a and b run, c and d wait.
        assert [p.run_id for p in manager.active()] == [a, b, c, d]
        statuses = [manager.status(i) for i in (a, b, c, d)]
        assert statuses == ["running", "running", "queued", "queued"]
        snapshot = manager.progress(a)
        assert (snapshot.status, snapshot.epoch, snapshot.total_epochs) == ("running", 2, 3)
        assert snapshot.fraction == pytest.approx(2 / 3)
        assert snapshot.eta_seconds == pytest.approx(0.5)  # 1 epoch left x 0.5 s per epoch
        assert snapshot.val_metric == pytest.approx(1 / (1 + snapshot.loss))
        assert manager.progress(c).status == "queued"
        assert paths.run_dir(a).joinpath("model.pt").is_file()  # written, then to be dropped

        assert manager.cancel(a) and manager.cancel(b)
        assert [manager.wait(i, WAIT_S) for i in (a, b, c, d)] == [
            "cancelled", "cancelled", "succeeded", "succeeded"
        ]  # fmt: skip

    assert_cancelled_cleanly(store, a, [1, 2])
    assert_cancelled_cleanly(store, b, [1])
    assert_finished_cleanly(store, c, 3)
    assert_finished_cleanly(store, d, 2)
    assert temp_files() == []
    assert manager.active() == []
    assert manager.progress(c).status == "succeeded" and manager.progress(c).fraction == 1.0
    assert manager.progress(a).status == "cancelled"
    assert not manager.cancel(c)  # already finished


def test_cancel_while_queued_never_runs(store, dataset_id):
    runner = LinearRegressionRunner()
    with JobManager(store, runner, workers=1) as manager:
        first = manager.submit(spec(dataset_id, "first", pause_after_epoch=1))
        waiting = manager.submit(spec(dataset_id, "waiting"))
        assert runner.pause_point("first").wait(WAIT_S)
        assert manager.cancel(waiting)
        assert manager.status(waiting) == "cancelled"  # at once, not when a worker frees up
        assert manager.cancel(first)
        assert manager.wait(first, WAIT_S) == "cancelled"
        after = manager.submit(spec(dataset_id, "after", epochs=1))
        assert manager.wait(after, WAIT_S) == "succeeded"
    assert runner.called == ["first", "after"]
    assert store.get_run(waiting).started is None
    assert_cancelled_cleanly(store, waiting, [])


def test_failing_job_records_error_and_worker_continues(store, dataset_id):
    runner = LinearRegressionRunner()

    def broken_writer(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    def runner_with_bad_write(ctx: JobContext) -> JobOutcome | None:
        if ctx.spec.name == "bad-write":
            ctx.write_artifact("model.onnx", broken_writer, kind="onnx")
        return runner(ctx)

    with JobManager(store, runner_with_bad_write, workers=1) as manager:
        failing = manager.submit(spec(dataset_id, "failing", fail_at_epoch=2))
        diverging = manager.submit(spec(dataset_id, "diverging", diverge_at_epoch=1))
        bad_write = manager.submit(spec(dataset_id, "bad-write"))
        healthy = manager.submit(spec(dataset_id, "healthy"))
        for run_id in (failing, diverging, bad_write, healthy):
            manager.wait(run_id, WAIT_S)

    failed = store.get_run(failing)
    assert failed.status == "failed"
    assert failed.error == "ValueError: loss exploded on purpose"
    assert [e.epoch for e in store.epochs(failing)] == [1]
    assert store.get_run(diverging).error == (
        "The loss became NaN in epoch 1; lower the learning rate."
    )  # a Distillery error's own sentence, no type prefix
    assert store.get_run(bad_write).error == "OSError: disk full"
    assert not paths.run_dir(bad_write).exists()  # no finished artifact: folder removed
    assert store.artifacts(bad_write) == []
    assert temp_files() == []
    assert_finished_cleanly(store, healthy, 3)


def test_artifact_names_are_confined_to_the_run_folder(store, dataset_id):
    outcomes: dict[str, object] = {}

    def runner(ctx: JobContext) -> None:
        for name in ("../escape.pt", "/etc/passwd", "model.tmp.pt", ""):
            try:
                ctx.artifact_path(name)
            except ConfigError as exc:
                outcomes[name] = exc
        outcomes["nested"] = ctx.write_artifact("onnx/model.onnx", lambda p: p.write_bytes(b"o"))

    with JobManager(store, runner) as manager:
        run_id = manager.submit(spec(dataset_id, "names"))
        assert manager.wait(run_id, WAIT_S) == "succeeded"
    assert all(
        isinstance(outcomes[n], ConfigError)
        for n in ("../escape.pt", "/etc/passwd", "model.tmp.pt", "")
    )
    nested = outcomes["nested"]
    assert nested.path == paths.run_dir(run_id) / "onnx" / "model.onnx"
    assert nested.path.read_bytes() == b"o" and nested.bytes == 1


# --------------------------------------------------------------------------- submission
def test_student_refused_until_its_teacher_has_succeeded(store, dataset_id):
    runner = LinearRegressionRunner()
    with JobManager(store, runner) as manager:
        teacher = manager.submit(spec(dataset_id, "teacher", pause_after_epoch=1, epochs=1))
        assert runner.pause_point("teacher").wait(WAIT_S)
        student = JobSpec(dataset_id, "student", "linear", {"epochs": 1}, teacher_run_id=teacher)
        with pytest.raises(ConfigError, match=f"Teacher run {teacher} is running"):
            manager.submit(student)
        with pytest.raises(ConfigError, match="Teacher run 999 does not exist"):
            manager.submit(JobSpec(dataset_id, "student", "linear", {}, teacher_run_id=999))
        with pytest.raises(ConfigError, match="needs a teacher run"):
            manager.submit(JobSpec(dataset_id, "student", "linear", {}))
        with pytest.raises(ConfigError, match="Dataset 999 does not exist"):
            manager.submit(JobSpec(999, "teacher", "linear", {}))
        with pytest.raises(ConfigError, match="Unknown run role"):
            manager.submit(JobSpec(dataset_id, "oracle", "linear", {}))
        assert [r.id for r in store.list_runs()] == [teacher]  # refusals create no rows

        manager.cancel(teacher)
        assert manager.wait(teacher, WAIT_S) == "cancelled"
        with pytest.raises(ConfigError, match="is cancelled; a student can only learn"):
            manager.submit(student)

        good_teacher = manager.submit(spec(dataset_id, "good teacher", epochs=1))
        assert manager.wait(good_teacher, WAIT_S) == "succeeded"
        other = store.add_dataset(
            name="other", source="t", content_hash="other", n_users=1, n_items=1, n_interactions=1
        )
        with pytest.raises(ConfigError, match="pick a teacher trained on the same dataset"):
            manager.submit(JobSpec(other.id, "student", "linear", {}, teacher_run_id=good_teacher))
        student_id = manager.submit(replace_teacher(student, good_teacher))
        assert manager.wait(student_id, WAIT_S) == "succeeded"
    record = store.get_run(student_id)
    assert (record.role, record.teacher_run_id) == ("student", good_teacher)
    assert store.list_runs(teacher_run_id=good_teacher) == [record]


def replace_teacher(job: JobSpec, teacher_run_id: int) -> JobSpec:
    return JobSpec(job.dataset_id, job.role, job.model, job.config, teacher_run_id, job.name)


def test_shutdown_drains_the_queue_and_refuses_new_jobs(store, dataset_id):
    manager = JobManager(store, LinearRegressionRunner(), workers=2)
    ids = [manager.submit(spec(dataset_id, f"j{i}", epochs=1)) for i in range(3)]
    manager.shutdown(wait=True)
    assert [store.get_run(i).status for i in ids] == ["succeeded"] * 3
    assert not any(t.is_alive() for t in manager._threads)
    with pytest.raises(ConfigError, match="shut down"):
        manager.submit(spec(dataset_id, "late"))


# --------------------------------------------------------------------------- recovery
def _expire(store: Store, run_id: int) -> None:
    """What time does to a dead owner's lease, without waiting for it."""
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE runs SET lease_expires = :t WHERE id = :id"),
            {"t": datetime(2000, 1, 1, tzinfo=UTC), "id": run_id},
        )


def _wait_until(condition, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_restart_recovers_dead_runs_and_serves_the_queued_ones(store, dataset_id):
    # What a previous process left behind.
    finished = store.create_run(dataset_id, "teacher", "mf", {}, status="running")
    finished_dir = paths.run_dir(finished.id)
    finished_dir.mkdir(parents=True)
    (finished_dir / "model.pt").write_bytes(b"done")
    (finished_dir / "stray.tmp-1.pt").write_bytes(b"?")  # finished runs are left as they are
    store.add_artifact(
        finished.id, "checkpoint", finished_dir / "model.pt", 4, sha256(finished_dir / "model.pt")
    )
    finished = store.set_status(finished.id, "succeeded")

    # Claimed by a process that died: its lease has run out.
    crashed = store.create_run(dataset_id, "teacher", "mf", {})
    assert store.claim_run("dead-process", 30).id == crashed.id
    _expire(store, crashed.id)
    store.add_epoch(crashed.id, 1, 0.5)
    crashed_dir = paths.run_dir(crashed.id)
    crashed_dir.mkdir(parents=True)
    (crashed_dir / "model.tmp-ab12.pt").write_bytes(b"half")

    # Running without any lease (written before leases existed): no live owner either.
    partly = store.create_run(dataset_id, "teacher", "mf", {}, status="running")
    partly_dir = paths.run_dir(partly.id)
    (partly_dir / "sub").mkdir(parents=True)
    (partly_dir / "epoch1.pt").write_bytes(b"whole")
    store.add_artifact(
        partly.id, "checkpoint", partly_dir / "epoch1.pt", 5, sha256(partly_dir / "epoch1.pt")
    )
    (partly_dir / "sub" / "epoch2.tmp-cd34.pt").write_bytes(b"half")

    # Held by a live process elsewhere: starting this manager must not touch it.
    elsewhere = store.create_run(dataset_id, "teacher", "mf", {})
    assert store.claim_run("live-process", 300).id == elsewhere.id
    (paths.run_dir(elsewhere.id)).mkdir(parents=True)
    (paths.run_dir(elsewhere.id) / "model.tmp-ef56.pt").write_bytes(b"being written")

    queued = store.create_run(dataset_id, "baseline", "mf", {})

    with JobManager(store, LinearRegressionRunner()) as manager:
        assert manager.recovered == [crashed.id, partly.id]
        for run_id in manager.recovered:
            run = store.get_run(run_id)
            assert (run.status, run.error) == ("interrupted", INTERRUPTED_NOTE)
        assert store.get_run(finished.id) == finished
        assert (finished_dir / "stray.tmp-1.pt").exists()
        assert not crashed_dir.exists()
        assert [e.epoch for e in store.epochs(crashed.id)] == [1]  # history is kept
        assert (partly_dir / "epoch1.pt").read_bytes() == b"whole"
        assert not (partly_dir / "sub" / "epoch2.tmp-cd34.pt").exists()
        live = store.get_run(elsewhere.id)
        assert (live.status, live.owner) == ("running", "live-process")
        assert (paths.run_dir(elsewhere.id) / "model.tmp-ef56.pt").exists()
        # A queued run survives the restart: this manager serves it, and new work as usual.
        assert manager.wait(queued.id, WAIT_S) == "succeeded"
        assert store.get_run(queued.id).owner == manager.owner
        fresh = manager.submit(spec(dataset_id, "fresh", epochs=1))
        assert manager.wait(fresh, WAIT_S) == "succeeded"
        assert store.get_run(elsewhere.id).status == "running"


def test_a_live_manager_recovers_a_dead_workers_run_when_its_lease_expires(store, dataset_id):
    ghost = store.create_run(dataset_id, "teacher", "mf", {})
    assert store.claim_run("worker-that-dies", 0.5).id == ghost.id
    folder = paths.run_dir(ghost.id)
    folder.mkdir(parents=True)
    (folder / "model.tmp-0000.pt").write_bytes(b"half")
    # Started while the lease is still good: nothing to recover yet.
    with JobManager(store, LinearRegressionRunner(), workers=0, lease_s=0.6) as manager:
        assert manager.recovered == []
        # The heartbeat thread sweeps every half lease and notices the lease ran out.
        assert manager.wait(ghost.id, WAIT_S) == "interrupted"
    assert store.get_run(ghost.id).error == INTERRUPTED_NOTE
    assert not folder.exists()


def test_two_managers_share_one_store_cancels_and_progress_cross_over(store, dataset_id):
    runner = LinearRegressionRunner()
    with JobManager(store, runner, workers=1, lease_s=5) as first:
        paused = first.submit(spec(dataset_id, "paused", pause_after_epoch=1, epochs=3))
        assert runner.pause_point("paused").wait(WAIT_S)
        # A second process starts: it never interrupts the first one's live run.
        with JobManager(store, runner, workers=1, lease_s=5) as second:
            assert second.recovered == []
            assert store.get_run(paused).owner == first.owner
            seen = second.progress(paused)  # written by the first, read from the store
            assert (seen.status, seen.epoch, seen.total_epochs) == ("running", 1, 3)
            assert seen.val_metric == pytest.approx(1 / (1 + seen.loss))
            assert [p.run_id for p in second.active()] == [paused]
            # Work queued through the first while it is busy is taken by the second.
            other = first.submit(spec(dataset_id, "other", epochs=1))
            assert second.wait(other, WAIT_S) == "succeeded"
            assert store.get_run(other).owner == second.owner
            # Cancel from the second process; the first's heartbeat hands it to the runner.
            assert second.cancel(paused)
            assert second.progress(paused).message in ("cancelling", "cancelled by the user")
            assert first.wait(paused, WAIT_S) == "cancelled"
    assert_cancelled_cleanly(store, paused, [1])
    assert runner.called == ["paused", "other"]  # each run executed once


def test_interrupting_shutdown_ends_the_running_run_interrupted(store, dataset_id):
    runner = LinearRegressionRunner()
    manager = JobManager(store, runner, workers=1)
    running = manager.submit(spec(dataset_id, "running", pause_after_epoch=1))
    waiting = manager.submit(spec(dataset_id, "waiting"))
    assert runner.pause_point("running").wait(WAIT_S)
    manager.shutdown(wait=True, interrupt=True)
    stopped = store.get_run(running)
    assert (stopped.status, stopped.error) == ("interrupted", STOPPED_NOTE)
    assert [e.epoch for e in store.epochs(running)] == [1]
    # The checkpoint it had recorded stays (like any interrupted run); nothing half-written.
    assert [a.path.name for a in store.artifacts(running)] == ["model.pt"]
    assert temp_files() == []
    assert store.get_run(waiting).status == "queued"  # left for another worker
    assert runner.called == ["running"]


def test_max_runs_stops_claiming_after_that_many(store, dataset_id):
    submitter = JobManager(store, LinearRegressionRunner(), workers=0)
    ids = [submitter.submit(spec(dataset_id, f"r{i}", epochs=1)) for i in range(3)]
    worker = JobManager(store, LinearRegressionRunner(), workers=2, max_runs=2)
    assert worker.join(timeout=WAIT_S)  # both threads stopped by themselves
    assert [store.get_run(i).status for i in ids] == ["succeeded", "succeeded", "queued"]
    worker.shutdown()
    submitter.shutdown()


def test_a_manager_that_lost_its_lease_stops_and_leaves_the_run_alone(store, dataset_id):
    runner = LinearRegressionRunner()
    with JobManager(store, runner, workers=1) as manager:
        run_id = manager.submit(spec(dataset_id, "slow", pause_after_epoch=1))
        assert runner.pause_point("slow").wait(WAIT_S)
        # Another process concluded this one was dead (say, a long network partition).
        _expire(store, run_id)
        assert store.expire_leases("taken over") == [run_id]
        _wait_until(lambda: not manager._executing, "the runner stopped")
    run = store.get_run(run_id)
    assert (run.status, run.error) == ("interrupted", "taken over")  # not overwritten
    assert [e.epoch for e in store.epochs(run_id)] == [1]


def test_process_killed_mid_training_is_recovered_by_the_next_one(store, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.slow_job"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, process.kill)  # never leave a stuck helper behind
    watchdog.start()
    milestones: dict[str, int] = {}
    try:
        while "RUNNING" not in milestones:
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"the helper exited early: {process.stderr.read()}")
            word, run_id = line.split()
            milestones[word] = int(run_id)
        slow_dir = paths.run_dir(milestones["RUNNING"])
        assert [p.name for p in slow_dir.iterdir()][0].startswith("model.tmp-")
        process.send_signal(signal.SIGKILL)
        assert process.wait(WAIT_S) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        process.kill()
        process.stdout.close()
        process.stderr.close()

    quick, slow, queued = milestones["FINISHED"], milestones["RUNNING"], milestones["QUEUED"]
    with Store() as reopened:
        assert reopened.get_run(slow).status == "running"  # until its lease runs out
        _wait_until(lambda: reopened.expired_runs() == [slow], "the killed process's lease ran out")
        with JobManager(reopened, LinearRegressionRunner()) as manager:
            assert manager.recovered == [slow]
            done = reopened.get_run(quick)
            assert done.status == "succeeded" and done.num_params == 3
            assert done.checkpoint_path.read_bytes() == b"finished"
            (artifact,) = reopened.artifacts(quick)
            assert artifact.sha256 == hashlib.sha256(b"finished").hexdigest()
            assert reopened.results(quick) == {"ndcg@10": 0.25}
            killed = reopened.get_run(slow)
            assert (killed.status, killed.error) == ("interrupted", INTERRUPTED_NOTE)
            assert [e.epoch for e in reopened.epochs(slow)] == [1]
            assert not paths.run_dir(slow).exists()
            # The run queued behind it was never started; the new process serves it.
            assert manager.wait(queued, WAIT_S) == "succeeded"
            assert temp_files() == []
