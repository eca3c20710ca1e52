"""Ray as the job backend (core.ray_backend): runs as Ray tasks on a local Ray cluster.

One local Ray (two CPUs, no dashboard) serves the whole module. Runs are real (tiny) MF
models trained by the app's `training_runner` in Ray worker processes, which open the
test's SQLite store by URL; the test process plays the app (submits, cancels, reads the
store). The test-only runners below are module-level classes, so Ray ships them to its
workers by reference (the workers import this module).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import ray

from core import paths, plans
from core.enums import PlanKind
from core.job_context import CANCELLED_NOTE, JobContext, JobOutcome
from core.jobs import JobManager
from core.models import ModelConfig
from core.pipeline import RunSpec, popularity_spec
from core.ray_backend import RAY_LOST_NOTE, RayBackend
from core.records import PlanStep
from core.runner import submit_run, training_runner
from core.store import Store
from core.train import TrainConfig
from tests.helpers import faults
from tests.helpers.waiting import WAIT_S, training, wait_until

LONG = RunSpec(
    name="long-mf",
    role="teacher",
    model=ModelConfig(family="mf", dim=8),
    train=TrainConfig(epochs=500, batch_size=64, patience=500),
)


@pytest.fixture(scope="module")
def ray_cluster():
    # A private instance, even where a `ray start` cluster runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def cancels(ray_cluster, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records every ``ray.cancel`` (its ``force``) and lets it through."""
    calls: list[bool] = []
    real_cancel = ray.cancel

    def recording_cancel(ref, *, force: bool = False, recursive: bool = True) -> None:
        calls.append(force)
        real_cancel(ref, force=force, recursive=recursive)

    monkeypatch.setattr(ray, "cancel", recording_cancel)
    return calls


@dataclass(frozen=True)
class Rendezvous:
    """Trains like the app, but the first ``parties`` students (or twins) of each plan start
    training only once all of them have started, each in its own process: a plan whose
    students did not run at the same time fails instead of passing slowly."""

    folder: str
    parties: int = 2

    def __call__(self, ctx: JobContext) -> JobOutcome:
        if ctx.run.plan_id is not None and ctx.spec.role in ("student", "baseline"):
            here = Path(self.folder) / f"plan-{ctx.run.plan_id}"
            here.mkdir(parents=True, exist_ok=True)
            (here / f"run-{ctx.run_id}-pid-{os.getpid()}").touch()
            deadline = time.monotonic() + WAIT_S / 2
            while len(list(here.iterdir())) < self.parties:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {ctx.run_id} trained alone; no other run came")
                time.sleep(0.05)
        return training_runner(ctx)


class Stubborn:
    """A runner stuck in code that never looks at the cancel event (say, a long load)."""

    def __call__(self, ctx: JobContext) -> JobOutcome:
        ctx.set_message(f"stuck in pid {os.getpid()}")
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return JobOutcome()


def stuck_pid(manager: JobManager, run_id: int) -> int | None:
    progress = manager.progress(run_id)
    if progress is None or not progress.message.startswith("stuck in pid "):
        return None
    return int(progress.message.rsplit(" ", 1)[1])


# --------------------------------------------------------------------------- runs
def test_the_ray_address_switch_trains_runs_as_ray_tasks_that_report_to_the_store(
    home, ray_cluster, monkeypatch
):
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        with JobManager(store, training_runner, workers=1) as plain:
            assert plain.backend is None  # no switch: the manager's own threads
        monkeypatch.setenv("DISTILLERY_RAY_ADDRESS", "auto")  # this test's Ray is running
        with JobManager(store, training_runner, workers=1) as manager:
            assert isinstance(manager.backend, RayBackend)
            assert len(manager._threads) == 2  # one run in flight per CPU of the cluster
            run_id = submit_run(manager, dataset_id, faults.MF_TEACHER)
            assert manager.wait(run_id, WAIT_S) == "succeeded", store.get_run(run_id).error
            assert manager.backend.submitted == 1 and manager.backend.in_flight() == []
        run = store.get_run(run_id)
        # A teacher asks for a GPU only where the cluster has one; this one has none.
        assert manager.backend.resources(run) == {"num_cpus": 1.0, "num_gpus": 0.0}
        assert run.owner == manager.owner and run.num_params > 0
        assert [e.epoch for e in store.epochs(run_id)] == [1]
        metrics = store.results(run_id)
        assert 0 <= metrics["ndcg@10"] <= 1 and "recall@10" in metrics
        assert "ndcg@10" in store.results(run_id, "valid")
        faults.assert_loadable(store, run_id)  # its checkpoint, written by the Ray task
        assert faults.temp_files() == []


def test_teachers_ask_for_a_gpu_where_the_cluster_has_one(home, ray_cluster, monkeypatch):
    backend = RayBackend("auto")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        cpu_only = replace(faults.MF_TEACHER.train, device="cpu")
        specs = {
            "teacher": faults.MF_TEACHER,
            "pinned": replace(faults.MF_TEACHER, train=cpu_only),
            "student": faults.MF_STUDENT,
            "popularity": popularity_spec(),
        }
        gpus = {}
        for name, spec in specs.items():
            run = store.create_run(dataset_id, spec.role, spec.model.family, spec.to_dict())
            gpus[name] = backend.resources(run)["num_gpus"]
    assert gpus == {"teacher": 1.0, "pinned": 0.0, "student": 0.0, "popularity": 0.0}
    assert backend.slots(1) == 16  # one run in flight per CPU


def test_a_plans_students_wait_for_their_teacher_and_a_sweep_fans_out(home, ray_cluster, tmp_path):
    demo = faults.mf_demo_plan()
    runner = Rendezvous(str(tmp_path / "rendezvous"))
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        backend = RayBackend("auto")
        with JobManager(store, runner, workers=1, backend=backend) as manager:
            demo_id = plans.submit_demo(manager, dataset_id, demo)
            ids = [r.id for r in plans.view(store, demo_id).runs]
            teacher_id, students = ids[1], ids[2:]
            for run_id in ids:
                assert manager.wait(run_id, WAIT_S) == "succeeded", store.get_run(run_id).error
            # The store queued the students when the teacher succeeded; they trained after it
            # and learned from it.
            teacher = store.get_run(teacher_id)
            for run_id in students:
                student = store.get_run(run_id)
                assert student.teacher_run_id == teacher_id
                assert student.started >= teacher.finished
                faults.assert_loadable(store, run_id)
            assert "jaccard_vs_teacher@10" in store.results(students[0])

            sweep_id = plans.submit_sweep(manager, teacher_id, "soft", (0.25,), epochs=1)
            sweep = [r.id for r in plans.view(store, sweep_id).runs]
            assert len(sweep) == 2  # one size: a distilled student and its twin
            for run_id in sweep:
                assert manager.wait(run_id, WAIT_S) == "succeeded", store.get_run(run_id).error
        assert plans.latest(store, PlanKind.SWEEP).status == "succeeded"
        assert backend.submitted == len(ids) + len(sweep)
    # Both plans had two runs in flight at once, in Ray worker processes (the rendezvous
    # let none of them train alone).
    for plan_id, runs in ((demo_id, students), (sweep_id, sweep)):
        met = [p.name for p in (tmp_path / "rendezvous" / f"plan-{plan_id}").iterdir()]
        assert sorted(int(name.split("-")[1]) for name in met) == sorted(runs)
        pids = {name.rsplit("-", 1)[1] for name in met}
        assert len(pids) >= 2 and str(os.getpid()) not in pids


def test_a_student_plan_step_is_released_by_the_store_not_by_the_ray_task(home, ray_cluster):
    """A waiting run is queued by whoever records its parent's end: a failed teacher's
    students end cancelled with the reason, and never reach Ray."""
    broken = replace(faults.MF_TEACHER, train=replace(faults.MF_TEACHER.train, lr=1e38))
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        backend = RayBackend("auto")
        with JobManager(store, training_runner, workers=1, backend=backend) as manager:
            job = plans._job(dataset_id, broken)
            _, (teacher, student) = manager.submit_plan(
                "broken", PlanKind.DEMO, [PlanStep(job), PlanStep(job, after=0)]
            )
            assert manager.wait(teacher, WAIT_S) == "failed"
            assert manager.wait(student, WAIT_S) == "cancelled"
        assert store.get_run(teacher).error.startswith("The learning rate must be a number")
        assert store.get_run(student).error.startswith(f"Not started: its teacher run #{teacher}")
        assert backend.submitted == 1


# --------------------------------------------------------------------------- cancel
def test_cancel_reaches_a_running_ray_task_through_the_store(home, ray_cluster, cancels):
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        # A grace longer than any wait here: the run must stop by itself, in its Ray task.
        backend = RayBackend("auto", cancel_grace_s=10 * WAIT_S)
        with JobManager(store, training_runner, workers=1, backend=backend) as manager:
            run_id = submit_run(manager, dataset_id, LONG)
            wait_until(lambda: training(manager, run_id), "the Ray task trains the run")
            assert manager.cancel(run_id)
            assert manager.wait(run_id, WAIT_S) == "cancelled"
            assert backend.in_flight() == []
    run = store.get_run(run_id)
    assert (run.status, run.error) == ("cancelled", CANCELLED_NOTE)
    assert len(store.epochs(run_id)) >= 1 and store.artifacts(run_id) == []
    assert not paths.run_dir(run_id).exists()
    assert cancels == []  # the cancel flag in the store was enough


def test_a_ray_task_that_ignores_the_cancel_is_ended_by_ray_cancel(home, ray_cluster, cancels):
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        backend = RayBackend("auto", cancel_grace_s=0.5)
        with JobManager(store, Stubborn(), workers=1, backend=backend) as manager:
            run_id = submit_run(manager, dataset_id, LONG)
            wait_until(lambda: stuck_pid(manager, run_id) is not None, "the Ray task starts")
            assert manager.cancel(run_id)
            assert manager.wait(run_id, WAIT_S) == "cancelled"
        run = store.get_run(run_id)
        assert (run.status, run.error) == ("cancelled", CANCELLED_NOTE)
        assert not paths.run_dir(run_id).exists()
    assert cancels == [True]


def test_a_ray_worker_that_dies_ends_its_run_interrupted(home, ray_cluster):
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        backend = RayBackend("auto")
        with JobManager(store, Stubborn(), workers=1, backend=backend) as manager:
            run_id = submit_run(manager, dataset_id, LONG)
            wait_until(lambda: stuck_pid(manager, run_id) is not None, "the Ray task starts")
            pid = stuck_pid(manager, run_id)
            assert pid != os.getpid()
            os.kill(pid, signal.SIGKILL)
            assert manager.wait(run_id, WAIT_S) == "interrupted"
        run = store.get_run(run_id)
        assert (run.status, run.error) == ("interrupted", RAY_LOST_NOTE)
        assert backend.in_flight() == [] and faults.temp_files() == []
