"""The headless worker (``python -m core worker``) with app processes on one store.

Each test runs on SQLite and on PostgreSQL. The worker is a real separate process
training real (tiny) models with the app's runner; the test process plays the app: a job
manager that submits, cancels, reads progress and, in the exactly-once test, trains too.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import replace

import pytest

pytest.register_assert_rewrite("tests.helpers.faults")

from core import paths, plans  # noqa: E402
from core.job_context import STOPPED_NOTE  # noqa: E402
from core.jobs import JobManager  # noqa: E402
from core.models import ModelConfig  # noqa: E402
from core.pipeline import RunSpec, popularity_spec  # noqa: E402
from core.runner import submit_run, training_runner  # noqa: E402
from core.store import Store  # noqa: E402
from core.train import TrainConfig  # noqa: E402
from tests.helpers import faults  # noqa: E402
from tests.helpers.processes import WorkerProcess, executions  # noqa: E402
from tests.helpers.waiting import WAIT_S, training, wait_until  # noqa: E402

LONG = RunSpec(
    name="long-mf",
    role="teacher",
    model=ModelConfig(family="mf", dim=8),
    train=TrainConfig(epochs=500, batch_size=64, patience=500),
)


def test_worker_serves_the_apps_queue_takes_cancels_and_stops_cleanly_on_sigterm(home, store_url):
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        # An app process that leaves the training to headless workers.
        app = JobManager(store, training_runner, workers=0)
        try:
            first = submit_run(app, dataset_id, LONG)
            with WorkerProcess() as worker:
                owner = worker.wait_until_serving()
                wait_until(lambda: training(app, first), "the worker trains the first run")
                assert store.get_run(first).owner == owner != app.owner
                assert app.cancel(first)  # from another process
                assert app.wait(first, WAIT_S) == "cancelled"
                assert not paths.run_dir(first).exists()

                popular = submit_run(app, dataset_id, popularity_spec())
                assert app.wait(popular, WAIT_S) == "succeeded"
                faults.assert_loadable(store, popular)  # its checkpoint, found from here

                second = submit_run(app, dataset_id, LONG)
                queued = submit_run(app, dataset_id, popularity_spec(seed=1))
                wait_until(lambda: training(app, second), "the worker trains the second run")
                worker.signal(signal.SIGTERM)
                assert worker.wait(WAIT_S) == 0, worker.output
            stopped = store.get_run(second)
            assert (stopped.status, stopped.error) == ("interrupted", STOPPED_NOTE)
            assert stopped.finished is not None and store.artifacts(second) == []
            assert not paths.run_dir(second).exists()
            assert faults.temp_files() == []
            assert store.get_run(queued).status == "queued"  # nothing taken after SIGTERM
            assert "served 3 run(s): 1 cancelled, 1 interrupted, 1 succeeded" in worker.output
            assert "Traceback" not in worker.output
        finally:
            app.shutdown()


def test_two_workers_and_an_app_process_execute_each_run_exactly_once(home, store_url, caplog):
    caplog.set_level(logging.INFO, logger="core.jobs")
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        submitter = JobManager(store, training_runner, workers=0)
        ids = [submit_run(submitter, dataset_id, popularity_spec(seed=i)) for i in range(12)]
        with WorkerProcess() as one, WorkerProcess() as two:
            owners = {one.wait_until_serving(), two.wait_until_serving()}
            # The app process serves the same queue at the same time.
            with JobManager(store, training_runner, workers=1) as app:
                owners.add(app.owner)
                for run_id in ids:
                    assert app.wait(run_id, WAIT_S) == "succeeded", store.get_run(run_id).error
            for worker in (one, two):
                worker.signal(signal.SIGTERM)
                assert worker.wait(WAIT_S) == 0, worker.output
        submitter.shutdown()
        started = executions([one.output, two.output, caplog.text])
        assert sorted(started) == ids and set(started.values()) == {1}
        assert {store.get_run(i).owner for i in ids} <= owners
        for run_id in ids:
            faults.assert_loadable(store, run_id)


def test_a_worker_loads_only_checkpoints_the_store_lists_in_the_data_dir(home, store_url, tmp_path):
    marker = tmp_path / "exploit-ran"
    outside = tmp_path / "elsewhere.pt"
    faults.torch.save({"state_dict": faults._Exploit(marker)}, outside)
    student = faults.MF_STUDENT
    with Store() as store, JobManager(store, training_runner) as manager:
        dataset_id = faults.tiny_dataset(store)
        unlisted = paths.run_dir(999) / "model.pt"
        unlisted.parent.mkdir(parents=True)
        unlisted.write_bytes(outside.read_bytes())
        for name, path in (("outside", outside), ("unlisted", unlisted)):
            teacher = store.create_run(dataset_id, "teacher", "mf", {}, status="running")
            store.update_run(teacher.id, checkpoint_path=path)
            store.set_status(teacher.id, "succeeded")
            run_id = submit_run(manager, dataset_id, replace(student, name=name), teacher.id)
            assert manager.wait(run_id, WAIT_S) == "failed"
            assert store.get_run(run_id).error == (
                f"The checkpoint of run #{teacher.id} is not a file this run store recorded in "
                "the data directory, so it is not loaded; train that run again."
            )
    assert not marker.exists()


def test_a_demo_plan_queued_by_the_app_finishes_in_a_headless_worker(home, store_url):
    """The students of a plan wait in the store, not in a browser: the worker that trains
    the teacher releases them (through the store) and trains them with that teacher."""
    demo = faults.mf_demo_plan()
    with Store() as store:
        dataset_id = faults.tiny_dataset(store)
        app = JobManager(store, training_runner, workers=0)  # a page's manager: no training
        try:
            plan_id = plans.submit_demo(app, dataset_id, demo)
            ids = [r.id for r in plans.view(store, plan_id).runs]
            assert [store.get_run(i).status for i in ids[2:]] == ["waiting", "waiting"]
            with WorkerProcess() as worker:
                worker.wait_until_serving()
                for run_id in ids:
                    assert app.wait(run_id, WAIT_S) == "succeeded", store.get_run(run_id).error
                worker.signal(signal.SIGTERM)
                assert worker.wait(WAIT_S) == 0, worker.output
        finally:
            app.shutdown()
        view = plans.latest(store)
        assert view.plan.id == plan_id and view.status == "succeeded"
        for run_id in ids[2:]:
            assert store.get_run(run_id).teacher_run_id == ids[1]
            faults.assert_loadable(store, run_id)
        assert "jaccard_vs_teacher@10" in store.results(ids[2])  # it learned from the teacher
        assert "served 4 run(s): 4 succeeded" in worker.output
