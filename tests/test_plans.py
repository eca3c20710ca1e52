"""Tests for run plans: core.plan_queries (the store releases or ends waiting runs), the job
manager's `submit_plan` / `resume`, and core.plans (the demo and sweep API, progress, ETA).

Every test runs on SQLite and on PostgreSQL (the ``store_url`` fixture in conftest.py).
Store-level tests drive runs by hand (claim, set_status, lease expiry); job-manager tests
use a quick runner that trains nothing but reports epochs and writes a checkpoint, so a
student can check that it was handed its teacher.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from core import paths, plans
from core.enums import PlanKind
from core.errors import ConfigError, StoreError
from core.job_context import CANCELLED_NOTE, STOPPED_NOTE, JobContext, JobOutcome
from core.jobs import JobManager
from core.models import ModelConfig, count_parameters
from core.pipeline import RunSpec
from core.records import JobSpec, PlanStep, jsonable
from core.store import Store
from core.views.forms import demo_plan

WAIT_S = 30  # generous upper bound for waits; never reached when things work


@pytest.fixture
def store(store_url: str):
    with Store() as opened:
        yield opened


@pytest.fixture
def dataset_id(store: Store) -> int:
    return store.add_dataset(
        name="tiny", source="test", content_hash="tiny", n_users=40, n_items=300, n_interactions=900
    ).id


def job(dataset_id: int, role: str, name: str, **config) -> JobSpec:
    return JobSpec(dataset_id, role, "mf", config, name=name)


def demo_steps(dataset_id: int, **teacher_config) -> list[PlanStep]:
    """Popularity, a teacher, and a student and its twin after the teacher."""
    return [
        PlanStep(job(dataset_id, "popularity", "popularity")),
        PlanStep(job(dataset_id, "teacher", "teacher", **teacher_config)),
        PlanStep(job(dataset_id, "student", "student"), after=1),
        PlanStep(job(dataset_id, "baseline", "twin"), after=1),
    ]


def expire(store: Store, run_id: int) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE runs SET lease_expires = :t WHERE id = :id"), {"t": past, "id": run_id}
        )


class QuickRunner:
    """Reports ``epochs`` epochs and writes a checkpoint. Students and twins record the
    teacher they were handed; the runs named in ``pause`` wait for their cancel event after
    their first epoch (``paused[name]`` is set then); ``fail`` in a config raises."""

    def __init__(self, pause: tuple[str, ...] = ()) -> None:
        self.pause = pause
        self.paused: dict[str, threading.Event] = {}
        self.teachers: dict[str, int | None] = {}

    def __call__(self, ctx: JobContext) -> JobOutcome:
        config = ctx.spec.config
        if ctx.spec.role in ("student", "baseline"):
            teacher = ctx.teacher
            self.teachers[ctx.spec.name] = None if teacher is None else teacher.id
        epochs = config.get("epochs", 2)
        for epoch in range(1, epochs + 1):
            ctx.check_cancelled()
            if config.get("fail"):
                raise ValueError("loss exploded on purpose")
            ctx.report(epoch, epochs, 1.0 / epoch, {}, {"ndcg@10": 0.1 * epoch}, seconds=0.01)
            if ctx.spec.name in self.pause and epoch == 1:
                self.paused.setdefault(ctx.spec.name, threading.Event()).set()
                assert ctx.cancel_event.wait(WAIT_S), "the test never stopped this run"
        ctx.write_artifact("model.bin", lambda p: p.write_bytes(b"weights"), kind="checkpoint")
        return JobOutcome(num_params=10, checkpoint_path=ctx.artifact_path("model.bin"))

    def wait_paused(self, name: str) -> None:
        assert self.paused.setdefault(name, threading.Event()).wait(WAIT_S), name


def wait_all(manager: JobManager, run_ids: list[int]) -> dict[int, str]:
    return {run_id: manager.wait(run_id, WAIT_S) for run_id in run_ids}


# --------------------------------------------------------------------------- store
def test_waiting_runs_are_never_claimed_and_are_queued_when_their_teacher_succeeds(
    store, dataset_id
):
    plan, runs = store.create_plan("demo", PlanKind.DEMO, dataset_id, demo_steps(dataset_id))
    popularity, teacher, student, twin = runs
    assert [r.status for r in runs] == ["queued", "queued", "waiting", "waiting"]
    assert {r.plan_id for r in runs} == {plan.id}
    assert (student.depends_on_run_id, student.teacher_run_id) == (teacher.id, None)
    assert store.get_plan(plan.id) == plan
    assert [r.id for r in store.list_runs(plan_id=plan.id)] == [r.id for r in runs]

    assert store.claim_run("worker", 30).id == popularity.id
    assert store.claim_run("worker", 30).id == teacher.id
    assert store.claim_run("worker", 30) is None  # the students wait
    store.set_status(popularity.id, "succeeded", owner="worker")
    assert store.get_run(student.id).status == "waiting"
    store.set_status(teacher.id, "succeeded", owner="worker")
    for run in (student, twin):
        released = store.get_run(run.id)
        assert (released.status, released.teacher_run_id) == ("queued", teacher.id)
    assert {store.claim_run("worker", 30).id for _ in range(2)} == {student.id, twin.id}


def test_a_failed_teacher_ends_its_students_and_theirs_with_the_reason(store, dataset_id):
    steps = [
        PlanStep(job(dataset_id, "teacher", "teacher")),
        PlanStep(job(dataset_id, "student", "student"), after=0),
        PlanStep(job(dataset_id, "student", "grandchild"), after=1),
    ]
    _, (teacher, student, grandchild) = store.create_plan("p", "custom", dataset_id, steps)
    store.claim_run("worker", 30)
    store.set_status(teacher.id, "failed", "ValueError: boom", owner="worker")
    ended = store.get_run(student.id)
    assert ended.status == "cancelled" and ended.started is None and ended.finished
    assert ended.error == f"Not started: its teacher run #{teacher.id} failed: ValueError: boom."
    deeper = store.get_run(grandchild.id)
    assert deeper.status == "cancelled"
    assert deeper.error.startswith(f"Not started: its parent run #{student.id} was cancelled")


def test_cancelling_a_queued_teacher_or_a_waiting_student(store, dataset_id):
    _, (_, teacher, student, twin) = store.create_plan(
        "demo", "demo", dataset_id, demo_steps(dataset_id)
    )
    assert store.request_cancel(twin.id, CANCELLED_NOTE)  # a waiting run can be cancelled
    assert store.get_run(twin.id).error == CANCELLED_NOTE
    assert store.request_cancel(teacher.id, CANCELLED_NOTE)
    ended = store.get_run(student.id)
    assert (ended.status, ended.error) == (
        "cancelled",
        f"Not started: its teacher run #{teacher.id} was cancelled.",
    )
    assert not store.request_cancel(student.id, CANCELLED_NOTE)  # already ended


def test_an_expired_teacher_ends_its_students_and_requeue_brings_the_plan_back(
    store, dataset_id, home
):
    _, (_, teacher, student, twin) = store.create_plan(
        "demo", "demo", dataset_id, demo_steps(dataset_id)
    )
    store.request_cancel(twin.id, CANCELLED_NOTE)  # the user's own cancel must stay
    store.claim_run("dead-process", 30)  # popularity
    assert store.claim_run("dead-process", 30).id == teacher.id
    store.add_epoch(teacher.id, 1, 0.5, seconds=1.0)
    store.set_results(teacher.id, "test", {"ndcg@10": 0.2})
    folder = paths.run_dir(teacher.id)
    folder.mkdir(parents=True)
    (folder / "model.tmp-1.bin").write_bytes(b"half")
    expire(store, teacher.id)
    assert teacher.id in store.expire_leases("interrupted: the process stopped")
    blocked = store.get_run(student.id)
    assert blocked.status == "cancelled"
    assert blocked.error == (
        f"Not started: its teacher run #{teacher.id} was interrupted: the process stopped."
    )

    with pytest.raises(ConfigError, match="only an interrupted run can be resumed"):
        store.requeue(student.id)
    assert store.requeue(teacher.id) == [teacher.id, student.id]
    again = store.get_run(teacher.id)
    assert (again.status, again.owner, again.started, again.error) == ("queued", None, None, None)
    assert again.progress == {} and not again.cancel_requested
    assert store.epochs(teacher.id) == [] and store.results(teacher.id) == {}
    assert not folder.exists()
    waiting = store.get_run(student.id)
    assert (waiting.status, waiting.error, waiting.finished) == ("waiting", None, None)
    assert store.get_run(twin.id).status == "cancelled"
    # The resumed teacher runs from scratch; its epochs are recorded again from 1.
    assert store.claim_run("new-process", 30).id == teacher.id
    store.add_epoch(teacher.id, 1, 0.4, seconds=1.0)
    store.set_status(teacher.id, "succeeded", owner="new-process")
    assert store.get_run(student.id).status == "queued"


def test_a_plan_after_a_deleted_or_failed_teacher_queues_nothing(store, dataset_id):
    def after(run_id: int) -> list[PlanStep]:
        return [PlanStep(job(dataset_id, "student", "s"), after_run=run_id)]

    teacher = store.create_run(dataset_id, "teacher", "mf", {})
    store.set_status(teacher.id, "running")
    store.set_status(teacher.id, "failed", "ValueError: boom")
    with pytest.raises(ConfigError, match=rf"^Run #{teacher.id} failed, so no run can learn"):
        store.create_plan("sweep", "sweep", dataset_id, after(teacher.id))
    store.delete_run(teacher.id)
    with pytest.raises(ConfigError, match="no longer exists \\(it was deleted\\)"):
        store.create_plan("sweep", "sweep", dataset_id, after(teacher.id))
    with pytest.raises(ConfigError, match="Unknown plan kind"):
        store.create_plan("x", "party", dataset_id, after(teacher.id))
    with pytest.raises(ConfigError, match="earlier run of its plan"):
        store.create_plan("x", "custom", dataset_id, [PlanStep(job(dataset_id, "teacher", "t"), 0)])
    assert store.list_plans() == [] and store.list_runs() == []

    done = store.create_run(dataset_id, "teacher", "mf", {})
    store.set_status(done.id, "running")
    store.set_status(done.id, "succeeded")
    plan, (student,) = store.create_plan("sweep", "sweep", dataset_id, after(done.id))
    # Its teacher has already succeeded: queued at once, with that teacher.
    assert (student.status, student.teacher_run_id, student.depends_on_run_id) == (
        "queued",
        done.id,
        done.id,
    )
    assert store.list_plans(kind="sweep") == [plan]
    assert store.list_plans(kind="demo") == []


def test_deleting_a_dataset_removes_its_plans(store, dataset_id):
    plan, runs = store.create_plan("demo", "demo", dataset_id, demo_steps(dataset_id))
    for run in runs:
        store.request_cancel(run.id, CANCELLED_NOTE)
    store.delete_dataset(dataset_id)
    assert store.list_plans() == [] and store.list_runs() == []


# --------------------------------------------------------------------------- job manager
def test_the_job_manager_runs_a_plan_to_the_end_and_hands_students_their_teacher(store, dataset_id):
    runner = QuickRunner()
    with JobManager(store, runner, workers=2) as manager:
        plan, ids = manager.submit_plan("demo", PlanKind.DEMO, demo_steps(dataset_id))
        assert set(wait_all(manager, ids).values()) == {"succeeded"}
    teacher = ids[1]
    assert runner.teachers == {"student": teacher, "twin": teacher}
    view = plans.view(store, plan.id)
    assert (view.status, view.done, view.eta_seconds, view.problem) == (
        "succeeded",
        True,
        None,
        None,
    )
    assert view.teacher.id == teacher


def test_a_failing_teacher_fails_the_plan_with_one_readable_reason(store, dataset_id):
    with JobManager(store, QuickRunner(), workers=1) as manager:
        plan, ids = manager.submit_plan("demo", "demo", demo_steps(dataset_id, fail=True))
        statuses = wait_all(manager, ids)
    assert list(statuses.values()) == ["succeeded", "failed", "cancelled", "cancelled"]
    view = plans.view(store, plan.id)
    assert view.status == "failed" and view.problem.id == ids[1]
    assert view.problem.error == "ValueError: loss exploded on purpose"
    assert store.get_run(ids[2]).error == (
        f"Not started: its teacher run #{ids[1]} failed: ValueError: loss exploded on purpose."
    )


def test_restarting_the_manager_in_the_middle_of_a_plan_finishes_it(store, dataset_id):
    """Three restarts: with the teacher done and the students queued, with the teacher
    running (stopped by the restart: one resume finishes the plan), and with the teacher's
    process killed (its lease runs out)."""
    # 1. The first server serves popularity and the teacher, then stops.
    first = JobManager(store, QuickRunner(), workers=1, max_runs=2)
    plan, ids = first.submit_plan("demo", "demo", demo_steps(dataset_id))
    assert first.wait(ids[1], WAIT_S) == "succeeded"
    first.shutdown(wait=True)
    assert [store.get_run(i).status for i in ids] == ["succeeded"] * 2 + ["queued"] * 2
    with JobManager(store, QuickRunner(), workers=1) as second:
        assert plans.view(store, plan.id).status == "running"
        assert set(wait_all(second, ids).values()) == {"succeeded"}
    assert plans.view(store, plan.id).status == "succeeded"

    # 2. The server restarts while the teacher trains: the teacher is interrupted, its
    # students end saying so, and one resume in the new server finishes the plan.
    runner = QuickRunner(pause=("teacher",))
    first = JobManager(store, runner, workers=1)
    plan, ids = first.submit_plan("demo 2", "demo", demo_steps(dataset_id))
    runner.wait_paused("teacher")
    first.shutdown(wait=True, interrupt=True)
    teacher = store.get_run(ids[1])
    assert (teacher.status, teacher.error) == ("interrupted", STOPPED_NOTE)
    view = plans.view(store, plan.id)
    assert (view.status, view.resumable) == ("interrupted", (ids[1],))
    assert store.get_run(ids[2]).error.startswith(f"Not started: its teacher run #{ids[1]} was")
    with JobManager(store, QuickRunner(), workers=2) as second:
        assert plans.latest(store, "demo").plan.id == plan.id
        assert plans.resume(second, plan.id) == [ids[1], ids[2], ids[3]]
        assert set(wait_all(second, ids).values()) == {"succeeded"}

    # 3. The process running the teacher dies: a live server notices the lease ran out.
    assert plans.view(store, plan.id).succeeded
    _, runs = store.create_plan("demo 3", "demo", dataset_id, demo_steps(dataset_id))
    ids = [r.id for r in runs]
    assert [store.claim_run("dead-process", 30).id for _ in range(2)] == ids[:2]
    expire(store, ids[0])
    expire(store, ids[1])
    with JobManager(store, QuickRunner(), workers=1, lease_s=1.0) as third:
        assert third.recovered == [ids[0], ids[1]]
        assert third.resume(ids[1]) == [ids[1], ids[2], ids[3]]
        third.resume(ids[0])
        assert set(wait_all(third, ids).values()) == {"succeeded"}


def test_a_new_process_resumes_a_plan_from_the_store_alone(store, dataset_id):
    """What a restarted server sees: a new Store and a new JobManager over the same
    database, nothing carried over in memory. Queued and waiting runs go on by themselves;
    a teacher that was running becomes interrupted, and one call resumes it and its
    students, which then run after it and are handed it."""
    # 1. The old process ran popularity and stopped: the teacher is queued, its students wait.
    old = JobManager(store, QuickRunner(), workers=1, max_runs=1)
    plan, ids = old.submit_plan("demo", "demo", demo_steps(dataset_id))
    assert old.wait(ids[0], WAIT_S) == "succeeded"
    old.shutdown(wait=True)
    runner = QuickRunner()
    with Store() as reopened:
        assert [r.status for r in reopened.list_runs(plan_id=plan.id)] == [
            "succeeded",
            "queued",
            "waiting",
            "waiting",
        ]
        with JobManager(reopened, runner, workers=1) as new:
            assert new.recovered == []
            assert set(wait_all(new, ids).values()) == {"succeeded"}
        teacher = reopened.get_run(ids[1])
        assert runner.teachers == {"student": teacher.id, "twin": teacher.id}
        assert all(reopened.get_run(i).started >= teacher.finished for i in ids[2:])

    # 2. The old process died while training the teacher (popularity had succeeded).
    plan, runs = store.create_plan("demo 2", "demo", dataset_id, demo_steps(dataset_id))
    ids = [r.id for r in runs]
    assert store.claim_run("dead-process", 30).id == ids[0]
    store.set_status(ids[0], "succeeded", owner="dead-process")
    popularity_finished = store.get_run(ids[0]).finished
    assert store.claim_run("dead-process", 30).id == ids[1]
    store.add_epoch(ids[1], 1, 0.5, seconds=1.0)
    expire(store, ids[1])
    runner = QuickRunner()
    with Store() as reopened, JobManager(reopened, runner, workers=2, lease_s=1.0) as new:
        assert new.recovered == [ids[1]]
        view = plans.view(reopened, plan.id)
        assert (view.status, view.resumable) == ("interrupted", (ids[1],))
        assert [r.status for r in view.runs] == ["succeeded", "interrupted"] + ["cancelled"] * 2
        assert plans.resume(new, plan.id) == ids[1:]  # one call: the teacher and its students
        assert set(wait_all(new, ids).values()) == {"succeeded"}
        teacher = reopened.get_run(ids[1])
        assert runner.teachers == {"student": teacher.id, "twin": teacher.id}
        assert all(reopened.get_run(i).started >= teacher.finished for i in ids[2:])
        assert reopened.get_run(ids[0]).finished == popularity_finished  # not run again
        assert [e.epoch for e in reopened.epochs(ids[1])] == [1, 2]  # from scratch, once
        assert plans.view(reopened, plan.id).status == "succeeded"


def test_shutdown_drains_a_plan_submitted_here(store, dataset_id):
    manager = JobManager(store, QuickRunner(), workers=1)
    _, ids = manager.submit_plan("demo", "demo", demo_steps(dataset_id))
    manager.shutdown(wait=True)  # the students wait at first; the drain still runs them
    assert [store.get_run(i).status for i in ids] == ["succeeded"] * 4


# --------------------------------------------------------------------------- core.plans
def test_submit_demo_queues_one_plan_per_running_demo(store, dataset_id):
    demo = demo_plan(epochs=1)
    with JobManager(store, QuickRunner(), workers=0) as manager:
        first = plans.submit_demo(manager, dataset_id, demo, epochs=1)
        assert plans.submit_demo(manager, dataset_id, demo, epochs=1) == first  # a second tab
        view = plans.latest(store)
        assert view.plan.id == first and view.plan.config == {"epochs": 1}
        assert [r.role for r in view.runs] == ["popularity", "teacher", "student", "baseline"]
        assert [r.status for r in view.runs] == ["queued", "queued", "waiting", "waiting"]
        assert view.runs[2].config == jsonable(demo.students[0].to_dict())
        assert view.eta_seconds is None  # nothing measured yet: no claim
        assert plans.cancel(manager, first) == [r.id for r in view.runs[:2]]
        cancelled = plans.latest(store)
        assert {r.status for r in cancelled.runs} == {"cancelled"}
        assert (cancelled.status, cancelled.problem.id) == ("cancelled", view.runs[0].id)
        assert plans.submit_demo(manager, dataset_id, demo) != first


def test_the_eta_comes_from_measured_epoch_times(store, dataset_id):
    steps = demo_steps(dataset_id, train={"epochs": 10})
    steps[2] = replace(steps[2], spec=replace(steps[2].spec, config={"train": {"epochs": 4}}))
    steps[3] = replace(steps[3], spec=replace(steps[3].spec, config={"train": {"epochs": 4}}))
    plan, (popularity, teacher, student, twin) = store.create_plan(
        "demo", "demo", dataset_id, steps
    )
    assert plans.view(store, plan.id).eta_seconds is None
    store.claim_run("w", 30)
    store.add_epoch(popularity.id, 1, 0.0, seconds=0.02)  # a count, not a trained epoch
    store.set_status(popularity.id, "succeeded", owner="w")
    store.claim_run("w", 30)
    # The teacher has not finished an epoch: popularity's milliseconds are no reference.
    assert plans.view(store, plan.id).eta_seconds is None
    for epoch in (1, 2):
        store.add_epoch(teacher.id, epoch, 0.5, seconds=3.0)
    # Nothing of the students' shape measured yet: costed at their teacher's epoch time.
    rough = plans.view(store, plan.id, workers=2)
    assert rough.eta_seconds == pytest.approx(8 * 3 + 4 * 3, abs=0.5) and rough.eta_estimated
    # An earlier run of the students' shape measured 1 s an epoch over 3 epochs.
    earlier = store.create_run(dataset_id, "baseline", "mf", {"train": {"epochs": 4}})
    store.set_status(earlier.id, "running")
    for epoch in (1, 2, 3):
        store.add_epoch(earlier.id, epoch, 0.5, seconds=1.0)
    store.set_status(earlier.id, "succeeded")

    one = plans.view(store, plan.id, workers=1)
    # Teacher: 8 epochs left x 3 s; then student and twin, 3 epochs x 1 s each, one after
    # the other on one worker, side by side on two.
    assert one.eta_seconds == pytest.approx(24 + 3 + 3, abs=0.5)
    assert not one.eta_estimated
    assert plans.view(store, plan.id, workers=2).eta_seconds == pytest.approx(24 + 3, abs=0.5)


def test_an_unmeasured_student_is_costed_from_its_teacher_by_size_and_distillation(
    store, dataset_id
):
    """Before any student has trained, its epoch is estimated from its teacher's measured
    one: sqrt of the parameter ratio, times its method's DISTILLED_EPOCH_FACTOR when distilled,
    plus the teacher cache's build."""
    big = ModelConfig(family="sasrec", dim=64, layers=2, heads=2, max_len=20, dropout=0.3)
    small = replace(big, dim=16, layers=1)
    distilled = {"model": asdict(small), "train": {"epochs": 4}, "distill": {"method": "combined"}}
    twin = {"model": asdict(small), "train": {"epochs": 4}}
    steps = demo_steps(dataset_id, model=asdict(big), train={"epochs": 2})
    steps[2] = replace(steps[2], spec=replace(steps[2].spec, config=distilled))
    steps[3] = replace(steps[3], spec=replace(steps[3].spec, config=twin))
    plan, (popularity, teacher, *_) = store.create_plan("demo", "demo", dataset_id, steps)
    store.claim_run("w", 30)
    store.set_status(popularity.id, "succeeded", owner="w")
    store.claim_run("w", 30)
    store.add_epoch(teacher.id, 1, 0.5, seconds=10.0)
    record = store.get_dataset(dataset_id)
    ratio = math.sqrt(
        count_parameters(small, record.n_users, record.n_items)
        / count_parameters(big, record.n_users, record.n_items)
    )
    assert 0.2 < ratio < 0.6
    view = plans.view(store, plan.id, workers=1)
    # Teacher: one epoch left (10 s); then the distilled student and its twin, 4 epochs each.
    # The distilled student also builds its teacher cache once: half a teacher epoch.
    distilled_cost = 4 * 10 * ratio * plans.DISTILLED_EPOCH_FACTOR["combined"]
    expected = 10 + distilled_cost + plans.TEACHER_CACHE_SHARE * 10 + 4 * 10 * ratio
    assert view.eta_seconds == pytest.approx(expected, rel=0.02) and view.eta_estimated


def sweep_teacher(store: Store, dataset_id: int, status: str = "succeeded") -> int:
    model = ModelConfig(family="sasrec", dim=64, layers=2, heads=2, max_len=20, dropout=0.3)
    spec = RunSpec("teacher sasrec d64", "teacher", model)
    teacher = store.create_run(dataset_id, "teacher", "sasrec", spec.to_dict())
    if status != "queued":
        store.set_status(teacher.id, "running")
    if status == "succeeded":
        store.update_run(teacher.id, num_params=count_parameters(model, 40, 300))
        store.set_status(teacher.id, "succeeded")
    return teacher.id


def test_a_sweep_queues_students_and_twins_per_size_and_seed(store, dataset_id):
    teacher = sweep_teacher(store, dataset_id)
    with JobManager(store, QuickRunner(), workers=0) as manager:
        plan_id = plans.submit_sweep(manager, teacher, "combined", (0.25, 0.03), seeds=2)
        view = plans.view(store, plan_id)
        assert view.plan.kind == "sweep" and view.plan.config["seeds"] == [0, 1]
        assert view.plan.config["fractions"] == [0.03, 0.25]
        assert len(view.runs) == 2 * 2 * 2
        assert {r.status for r in view.runs} == {"queued"}  # the teacher has succeeded
        assert {r.teacher_run_id for r in view.runs} == {teacher}
        roles = [(r.role, r.config["train"]["seed"], r.config["model"]["dim"]) for r in view.runs]
        dims = view.plan.config["widths"]
        assert roles[:4] == [
            ("student", 0, dims[0]),
            ("baseline", 0, dims[0]),
            ("student", 1, dims[0]),
            ("baseline", 1, dims[0]),
        ]
        assert view.runs[0].config["distill"]["method"] == "combined"
        assert view.runs[1].config["distill"]["method"] == "none"
        plans.cancel(manager, plan_id)


def test_a_sweep_waits_for_a_training_teacher_and_refuses_bad_sizes(store, dataset_id):
    training = sweep_teacher(store, dataset_id, status="running")
    # recover=False: the hand-made running teacher has no lease a manager would respect.
    with JobManager(store, QuickRunner(), workers=0, recover=False) as manager:
        plan_id = plans.submit_sweep(manager, training, "soft", (0.1,))
        assert {r.status for r in plans.view(store, plan_id).runs} == {"waiting"}
        for fractions, message in [
            ((0.1, 1.5), "below 100%; 150% is not"),
            ((), "at least one student size"),
        ]:
            with pytest.raises(ConfigError, match=message):
                plans.submit_sweep(manager, training, "soft", fractions)
        with pytest.raises(ConfigError, match="Unknown distillation method 'none'"):
            plans.submit_sweep(manager, training, "none")
        with pytest.raises(ConfigError, match="no longer exists \\(it was deleted\\)"):
            plans.submit_sweep(manager, 9999, "soft")
        assert len(store.list_plans()) == 1
        plans.cancel(manager, plan_id)


def test_a_size_at_the_teachers_parameters_is_one_sentence(store, dataset_id):
    # A one-block teacher: a student at 99% of it is as big as the teacher.
    model = ModelConfig(family="mf", dim=4)
    with pytest.raises(ConfigError, match="not fewer than the teacher's"):
        plans.sweep_sizes(model, 40, 300, (0.99,))
    assert [m.dim for _, m, _ in plans.sweep_sizes(model, 40, 300, (0.5, 0.51))] == [2]


def test_plans_survive_a_new_store_object(store_url, dataset_id, store):
    """What a reload, another tab or a restarted server sees: the plan, from the store."""
    plan, _ = store.create_plan("demo", "demo", dataset_id, demo_steps(dataset_id))
    with Store() as reopened:
        view = plans.latest(reopened)
        assert view.plan == plan and view.status == "running"
        assert [r.status for r in view.runs] == ["queued", "queued", "waiting", "waiting"]


def test_an_unknown_plan_is_a_store_error(store: Store):
    with pytest.raises(StoreError, match="Plan 42 does not exist"):
        store.get_plan(42)
    assert plans.latest(store, "sweep") is None
