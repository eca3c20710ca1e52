"""Worker processes as the job backend (core.process_backend): each run in a fresh process.

Runs are real (tiny) MF models trained by the app's `training_runner` in spawned processes
that open the test's SQLite store by URL; the test process plays the app (submits,
cancels, kills, reads the store). The test-only runners are module-level classes, so they
travel pickled to the spawned processes (which import this module).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from core import plans
from core.job_context import CANCELLED_NOTE, STOPPED_NOTE, JobContext, JobOutcome
from core.jobs import JobManager
from core.models import ModelConfig
from core.pipeline import RunSpec
from core.process_backend import PROCESS_LOST_NOTE, ProcessBackend, default_backend
from core.remote_run import RemoteRun, load_runner, runner_reference
from core.runner import submit_run, training_runner
from core.store import Store
from core.train import TrainConfig
from tests.helpers import faults
from tests.helpers.waiting import WAIT_S, training, wait_until

ROOT = Path(__file__).resolve().parent.parent
LONG = RunSpec(
    name="long-mf",
    role="teacher",
    model=ModelConfig(family="mf", dim=8),
    train=TrainConfig(epochs=500, batch_size=64, patience=500),
)


@dataclass(frozen=True)
class Probe:
    """Trains like the app, after noting where: process, thread and torch's thread count."""

    folder: str

    def __call__(self, ctx: JobContext) -> JobOutcome:
        where = {
            "pid": os.getpid(),
            "main_thread": threading.current_thread() is threading.main_thread(),
            "torch_threads": torch.get_num_threads(),
        }
        Path(self.folder, f"run-{ctx.run_id}.json").write_text(json.dumps(where))
        return training_runner(ctx)


class Stubborn:
    """A runner stuck in code that never looks at the cancel event (say, a long load)."""

    def __call__(self, ctx: JobContext) -> JobOutcome:
        ctx.set_message("stuck")
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return JobOutcome()


def _pid(backend: ProcessBackend, run_id: int) -> int:
    wait_until(lambda: backend.in_flight().get(run_id), f"run {run_id} has a process")
    return backend.in_flight()[run_id]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie no one has reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def test_the_app_trains_runs_in_processes_unless_told_threads_or_ray(monkeypatch):
    monkeypatch.delenv("DISTILLERY_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("DISTILLERY_EXECUTOR", raising=False)
    assert isinstance(default_backend(), ProcessBackend)
    monkeypatch.setenv("DISTILLERY_EXECUTOR", "thread")
    assert default_backend() is None
    monkeypatch.setenv("DISTILLERY_EXECUTOR", "process")
    monkeypatch.setenv("DISTILLERY_RAY_ADDRESS", "auto")
    assert default_backend() is None  # the job manager then uses Ray


def test_a_demo_plan_trains_each_run_on_the_main_thread_of_its_own_process(home, tmp_path):
    folder = tmp_path / "where"
    folder.mkdir()
    backend = ProcessBackend(cores=4)
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        with JobManager(store, Probe(str(folder)), workers=2, backend=backend) as manager:
            demo_id = plans.submit_demo(manager, dataset_id, faults.mf_demo_plan())
            ids = [r.id for r in plans.view(store, demo_id).runs]
            for run_id in ids:
                assert manager.wait(run_id, WAIT_S) == "succeeded", store.get_run(run_id).error
        teacher_id, students = ids[1], ids[2:]
        teacher = store.get_run(teacher_id)
        for run_id in students:
            student = store.get_run(run_id)
            assert student.teacher_run_id == teacher_id and student.started >= teacher.finished
            assert student.owner == manager.owner  # the process wrote under the claim
            faults.assert_loadable(store, run_id)
        assert "ndcg@10" in store.results(teacher_id)
        assert [e.epoch for e in store.epochs(teacher_id)] == [1]
    # Popularity (a count) stays on the worker thread; every trained model had a process.
    assert backend.started == len(ids) - 1 and backend.in_flight() == {}
    trained = ids[1:]  # popularity's Probe ran in this process, on a worker thread
    where = [json.loads((folder / f"run-{i}.json").read_text()) for i in trained]
    pids = {w["pid"] for w in where}
    assert len(pids) == len(trained) and os.getpid() not in pids
    assert all(w["main_thread"] for w in where)
    # Two runs at once share four cores: two torch threads each, never oversubscribed.
    assert {w["torch_threads"] for w in where} == {2}
    assert faults.temp_files() == []


def test_a_cancel_reaches_the_process_through_the_store(home):
    backend = ProcessBackend()
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        with JobManager(store, training_runner, workers=1, backend=backend) as manager:
            run_id = submit_run(manager, dataset_id, LONG)
            pid = _pid(backend, run_id)
            wait_until(lambda: training(manager, run_id), "the run trains")
            assert manager.cancel(run_id)
            assert manager.wait(run_id, WAIT_S) == "cancelled"
        run = store.get_run(run_id)
        assert run.error == CANCELLED_NOTE and run.checkpoint_path is None
    wait_until(lambda: _gone(pid), "the process has exited")
    assert faults.temp_files() == []


def test_a_process_that_ignores_the_cancel_is_terminated_after_the_grace(home):
    backend = ProcessBackend(cancel_grace_s=0.5)
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        with JobManager(store, Stubborn(), workers=1, backend=backend) as manager:
            run_id = submit_run(manager, dataset_id, LONG)
            pid = _pid(backend, run_id)
            wait_until(lambda: manager.progress(run_id).message == "stuck", "the run is stuck")
            started = time.monotonic()
            assert manager.cancel(run_id)
            assert manager.wait(run_id, WAIT_S) == "cancelled"
            assert time.monotonic() - started < WAIT_S / 4
        assert store.get_run(run_id).error == CANCELLED_NOTE
    assert _gone(pid)


def test_a_killed_process_ends_its_run_interrupted_and_one_click_resumes_it(home):
    backend = ProcessBackend()
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        with JobManager(store, training_runner, workers=1, backend=backend) as manager:
            run_id = submit_run(manager, dataset_id, LONG)
            pid = _pid(backend, run_id)
            wait_until(lambda: training(manager, run_id), "the run trains")
            os.kill(pid, signal.SIGKILL)  # the out-of-memory killer, say
            assert manager.wait(run_id, WAIT_S) == "interrupted"
            assert store.get_run(run_id).error == PROCESS_LOST_NOTE
            assert faults.temp_files() == []
            # The app's job manager is still serving: resume trains the run again.
            assert manager.resume(run_id) == [run_id]
            wait_until(lambda: backend.in_flight().get(run_id) not in (None, pid), "a new process")
            wait_until(lambda: training(manager, run_id), "the resumed run trains")
            assert manager.cancel(run_id)
            assert manager.wait(run_id, WAIT_S) == "cancelled"


@pytest.mark.parametrize("stuck", [False, True], ids=["training", "stuck"])
def test_stopping_the_app_ends_its_runs_interrupted_and_leaves_no_process(home, stuck):
    backend = ProcessBackend(cancel_grace_s=1.0)
    runner = Stubborn() if stuck else training_runner
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        manager = JobManager(store, runner, workers=1, backend=backend)
        run_id = submit_run(manager, dataset_id, LONG)
        pid = _pid(backend, run_id)
        wait_until(
            lambda: (
                manager.progress(run_id).message == "stuck" if stuck else training(manager, run_id)
            ),
            "the run is under way",
        )
        manager.shutdown(wait=True, interrupt=True)
        run = store.get_run(run_id)
        assert (run.status, run.error) == ("interrupted", STOPPED_NOTE)
    assert _gone(pid)
    assert faults.temp_files() == []


def test_a_run_travels_to_its_process_as_json_with_the_runner_named():
    call = RemoteRun(1, "host:1:ab", "sqlite:////tmp/x.db", "/tmp/home", 30.0, Probe("/tmp/w"), 2)
    back = RemoteRun.from_json(call.to_json())
    assert back == call and isinstance(back.runner, Probe)
    assert load_runner(runner_reference(training_runner)) is training_runner
    assert isinstance(load_runner(runner_reference(Stubborn())), Stubborn)
    with pytest.raises(ValueError, match="module level"):
        runner_reference(lambda ctx: None)


def test_a_runner_that_cannot_travel_fails_its_run_with_a_sentence(home):
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        with JobManager(store, lambda ctx: None, workers=1, backend=ProcessBackend()) as manager:
            run_id = submit_run(manager, dataset_id, LONG)
            assert manager.wait(run_id, WAIT_S) == "failed"
        assert "module level" in store.get_run(run_id).error


APP = """
import sys, time
from core.jobs import JobManager
from core.process_backend import ProcessBackend
from core.runner import submit_run, training_runner
from core.store import Store
from tests.helpers import faults
from tests.test_process_backend import LONG
from tests.helpers.waiting import training, wait_until

store = Store()
backend = ProcessBackend()
manager = JobManager(store, training_runner, workers=1, lease_s=2.0, backend=backend)
run_id = submit_run(manager, faults.tiny_dataset(store), LONG)
wait_until(lambda: training(manager, run_id), "the run trains")
print("RUNNING", run_id, backend.in_flight()[run_id], flush=True)
time.sleep(600)
"""


def test_a_killed_app_takes_its_training_processes_with_it(home):
    """The app is killed (SIGKILL: no clean-up of its own): its training process notices
    within a second and stops, and the run ends interrupted once its lease runs out."""
    app = subprocess.Popen([sys.executable, "-c", APP], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = app.stdout.readline().split()
        assert line and line[0] == "RUNNING", line
        run_id, child = int(line[1]), int(line[2])
        app.kill()
        app.wait(WAIT_S)
        wait_until(lambda: _gone(child), "the orphaned training process has stopped", 15)
    finally:
        if app.poll() is None:
            app.kill()
    time.sleep(2.5)  # the lease (2 s) runs out
    with Store() as store, JobManager(store, training_runner, workers=0) as manager:
        assert run_id in manager.recovered
        run = store.get_run(run_id)
        assert run.status == "interrupted" and run.checkpoint_path is None
    assert faults.temp_files() == []
