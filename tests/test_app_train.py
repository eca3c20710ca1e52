"""AppTests of the Train page (teacher and student forms, live panel, cancel) and the pure
helpers of core/views/forms.py (and the run title of core/views/text.py) behind them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.distill import DistillConfig
from core.errors import ConfigError
from core.job_context import Progress
from core.models import ModelConfig, count_parameters
from core.pipeline import STUDENT_MODEL, STUDENT_TRAIN, TEACHER_MODEL, TEACHER_TRAIN
from core.records import RunRecord
from core.store import Store
from core.views import forms
from core.views.runs import teacher_choices
from core.views.text import format_duration, run_title

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/train.py"
TINY_SIZES = {"dim": 8, "layers": 1, "heads": 1, "max_len": 20}
TINY_TRAIN = {"epochs": 1, "batch_size": 64}


pytestmark = pytest.mark.usefixtures("fresh_app")


def train_page(timeout: float = 120) -> AppTest:
    return AppTest.from_file(APP, default_timeout=timeout).switch_page(PAGE).run()


def set_numbers(at: AppTest, role: str, values: dict) -> None:
    for name, value in values.items():
        at.number_input(key=f"{role}_{name}").set_value(value)


def test_renders_on_an_empty_store(home):
    at = train_page()
    assert not at.exception and not at.error
    assert "No dataset yet" in at.info[0].value
    assert not at.number_input
    assert "Nothing is training right now." in [c.value for c in at.caption]


def test_renders_forms_for_a_seeded_store(seeded_home):
    _, ids = seeded_home
    store = Store()
    dataset, teacher = store.get_dataset(ids["dataset"]), store.get_run(ids["teacher"])
    at = train_page()
    assert not at.exception and not at.error
    assert at.selectbox(key="train_dataset").value == dataset.id
    assert [t.label for t in at.tabs] == ["Teacher", "Student"]
    # teacher: 4 SASRec sizes + 7 training numbers; student: the same + soft's T and a
    teacher_inputs = [n for n in at.number_input if n.key.startswith("teacher_")]
    student_inputs = [n for n in at.number_input if n.key.startswith("student_")]
    # (and the teacher's anneal after early stopping; the student's rate already falls)
    assert len(teacher_inputs) == 12 and len(student_inputs) == 13
    # The defaults are the dataset's recipe (what `python -m core run` trains).
    plan = forms.presets(dataset)
    assert at.number_input(key="teacher_dim").value == plan.teacher.dim
    assert at.number_input(key="student_dim").value == plan.student.dim
    assert at.number_input(key="student_lr").value == pytest.approx(plan.student_train.lr)
    anneal = at.number_input(key="teacher_anneal_epochs")
    assert anneal.label == "Anneal epochs" and anneal.value == plan.teacher_train.anneal_epochs
    assert not [n for n in student_inputs if n.key == "student_anneal_epochs"]
    assert at.selectbox(key="student_teacher").value == teacher.id
    assert at.selectbox(key="student_method").value == "soft"
    assert at.checkbox(key="student_baseline").value is True
    # the live size readout: parameters and the ratio to the teacher
    params = count_parameters(plan.student, dataset.n_users, dataset.n_items)
    metric = at.metric[0]
    assert metric.label == "Student parameters" and metric.value == f"{params:,}"
    assert metric.delta == f"{params / teacher.num_params:.1%} of the teacher"

    at.number_input(key="student_dim").set_value(24).run()
    bigger = count_parameters(replace(plan.student, dim=24), dataset.n_users, dataset.n_items)
    assert at.metric[0].value == f"{bigger:,}"


def test_knobs_follow_the_method_and_the_family_sizes(seeded_home):
    at = train_page()
    at.selectbox(key="student_method").set_value("ranking").run()
    labels = {n.label for n in at.number_input if n.key.startswith("student_ranking_")}
    assert labels == {"Teacher top-K", "Position decay lambda", "Term weight l",
                      "Dynamic sharpness mu"}  # fmt: skip
    assert at.checkbox(key="student_dynamic").value is False
    assert at.checkbox(key="student_teacher_init").value is False
    at.selectbox(key="student_family").set_value("mf").run()
    sizes = {
        n.key for n in at.number_input if n.key in {f"student_{f.name}" for f in forms.SIZE_FIELDS}
    }
    assert sizes == {"student_dim"}
    at.selectbox(key="teacher_family").set_value("two_tower").run()
    assert at.number_input(key="teacher_hidden").value == TEACHER_MODEL.hidden  # recipe keeps it
    assert not at.exception


def test_submit_a_tiny_teacher_then_a_student_and_its_twin(seeded_home, monkeypatch):
    monkeypatch.setenv("DISTILLERY_SYNC_JOBS", "1")
    _, ids = seeded_home
    at = train_page()
    set_numbers(at, "teacher", {**TINY_SIZES, **TINY_TRAIN, "anneal_epochs": 1})
    at.text_input(key="teacher_name").set_value("tiny teacher")
    at.button[0].click()  # the teacher form's submit button comes first
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    store = Store()
    new_teacher = store.list_runs(role="teacher")[-1]
    assert new_teacher.name == "tiny teacher" and new_teacher.status == "succeeded"
    assert new_teacher.config["model"]["dim"] == 8 and new_teacher.config["train"]["epochs"] == 1
    assert new_teacher.config["train"]["anneal_epochs"] == 1  # the form's, not the recipe's
    assert any("Queued 1 run(s)" in t.value for t in at.toast)

    picker = at.selectbox(key="student_teacher")
    assert picker.options[0].startswith(f"#{new_teacher.id} tiny teacher")  # newest first
    assert picker.value == ids["teacher"]  # the choice made before survives the rerun
    picker.set_value(new_teacher.id)
    set_numbers(at, "student", {**TINY_SIZES, **TINY_TRAIN})
    at.checkbox(key="student_teacher_init").check()
    at.button(key="student_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    runs = store.list_runs(teacher_run_id=new_teacher.id)
    assert {r.role for r in runs} == {"student", "baseline"}
    assert all(r.status == "succeeded" for r in runs), [r.error for r in runs]
    student = next(r for r in runs if r.role == "student")
    assert student.config["distill"]["method"] == "soft"
    assert student.config["distill"]["teacher_init"] is True
    assert student.config["model"] == next(r for r in runs if r.role == "baseline").config["model"]
    # the seeded dataset already has a popularity run: no second one
    assert [r.id for r in store.list_runs(role="popularity")] == [ids["popularity"]]
    # each finished run gets a toast
    assert sum(": succeeded" in t.value for t in at.toast) == 2


def test_a_student_without_twin_queues_popularity_when_missing(seeded_home, monkeypatch):
    monkeypatch.setenv("DISTILLERY_SYNC_JOBS", "1")
    _, ids = seeded_home
    Store().delete_run(ids["popularity"])
    at = train_page()
    set_numbers(at, "student", {**TINY_SIZES, **TINY_TRAIN})
    at.checkbox(key="student_baseline").uncheck()
    at.button(key="student_launch").click().run()
    assert not at.exception and not at.error
    new = [r for r in Store().list_runs() if r.id > ids["student-soft"]]
    assert [(r.role, r.status) for r in new] == [
        ("student", "succeeded"),
        ("popularity", "succeeded"),
    ]


def test_an_invalid_teacher_config_is_one_error_and_queues_nothing(seeded_home):
    at = train_page()
    set_numbers(at, "teacher", {"dim": 10, "heads": 3})
    at.button[0].click()
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == ["SASRec needs dim (10) divisible by heads (3)."]
    assert len(Store().list_runs()) == 4


def test_live_panel_shows_an_active_run_and_cancels_it(seeded_home):
    from pages.common import get_jobs

    at = train_page()
    set_numbers(at, "teacher", {**TINY_SIZES, "epochs": 1000, "patience": 100})
    at.button[0].click()
    at.run()
    assert not at.exception and not at.error
    run_id = Store().list_runs(role="teacher")[-1].id
    assert len(at.progress) == 1
    cancel = at.button(key=f"train_cancel_{run_id}")
    cancel.click().run()
    # A run cancelled before a worker picked it up ends at once, so its toast may come
    # in this very run; a running one ends at its next cancel check.
    toasts = [t.value for t in at.toast]
    assert get_jobs().wait(run_id, timeout=60) == "cancelled"
    at.run()
    toasts += [t.value for t in at.toast]
    assert not at.exception and not at.progress
    assert toasts.count(f"#{run_id} teacher sasrec d8: cancelled") == 1


# --------------------------------------------------------------------------- core/views/forms
def run_record(run_id: int, role: str, status: str) -> RunRecord:
    now = datetime.now(UTC)
    return RunRecord(run_id, 1, role, "sasrec", {}, status, None, None, None, None, now,
                     None, None, 1000, None, None, ())  # fmt: skip


def test_distill_config_keeps_only_the_methods_knobs():
    config = forms.distill_config("soft", temperature=4.0, alpha=0.3, top_k=99, beta=9.0)
    assert config == DistillConfig(method="soft", temperature=4.0, alpha=0.3)
    ranking = forms.distill_config("ranking", top_k=5.0, lam=2.0, dynamic=True, temperature=9.0)
    assert ranking == DistillConfig(method="ranking", top_k=5, lam=2.0, dynamic=True)
    assert isinstance(ranking.top_k, int)
    with pytest.raises(ConfigError, match="alpha must be in"):
        forms.distill_config("soft", alpha=1.5)
    with pytest.raises(ConfigError, match="Unknown distillation method"):
        forms.distill_config("none")
    assert set(forms.METHOD_KNOBS) == {"soft", "hard", "combined", "ranking", "listwise"}
    for knobs in forms.METHOD_KNOBS.values():
        assert all(k in forms.KNOB_FIELDS or k in ("dynamic", "teacher_init") for k in knobs)
        assert "teacher_init" in knobs  # every method may start from the teacher's items
    assert forms.distill_config("hard", teacher_init=True).teacher_init is True


def test_model_and_train_configs_from_form_values():
    model = forms.model_config("two_tower", dim=16, hidden=32, layers=None)
    assert model == replace(STUDENT_MODEL, family="two_tower", dim=16, hidden=32)
    with pytest.raises(ConfigError, match="divisible by heads"):
        forms.model_config("sasrec", dim=10, heads=3)
    train = forms.train_config(base=TEACHER_TRAIN, epochs=2, lr=0.01, device="cpu")
    assert train == replace(TEACHER_TRAIN, epochs=2, lr=0.01, device="cpu")
    with pytest.raises(ConfigError, match="learning rate must be"):
        forms.train_config(lr=0.0)
    assert [f.name for f in forms.size_fields("sasrec")] == ["dim", "layers", "heads", "max_len"]
    assert [f.name for f in forms.size_fields("two_tower")] == ["dim", "layers", "hidden"]
    assert [f.name for f in forms.size_fields("mf")] == ["dim"]


def test_parameter_count_and_ratio():
    config = ModelConfig(family="mf", dim=4)
    assert forms.parameter_count(config, 10, 20) == count_parameters(config, 10, 20)
    assert forms.size_ratio(50, 1000) == 0.05
    assert forms.size_ratio(50, None) is None and forms.size_ratio(None, 10) is None


def test_launch_plans():
    distill = forms.distill_config("hard", top_k=5)
    plan = forms.student_launches(STUDENT_MODEL, STUDENT_TRAIN, distill, teacher_run_id=7,
                                  with_baseline=True, with_popularity=True)  # fmt: skip
    assert [(x.spec.role, x.teacher_run_id) for x in plan] == [
        ("student", 7), ("baseline", 7), ("popularity", None),
    ]  # fmt: skip
    assert plan[0].spec.distill == distill and plan[1].spec.distill.method == "none"
    assert plan[0].spec.name == "student-hard sasrec d32"
    assert plan[1].spec.name == "student-no-teacher sasrec d32"
    only = forms.student_launches(STUDENT_MODEL, STUDENT_TRAIN, distill, teacher_run_id=7,
                                  with_baseline=False)  # fmt: skip
    assert [x.spec.role for x in only] == ["student"]
    (teacher,) = forms.teacher_launches("mf", {"dim": 16}, {"epochs": 3}, name="  ")
    assert teacher.teacher_run_id is None and teacher.spec.role == "teacher"
    assert teacher.spec.name == "teacher mf d16" and teacher.spec.train.epochs == 3


def test_run_lists():
    runs = [run_record(1, "teacher", "succeeded"), run_record(2, "teacher", "failed"),
            run_record(3, "teacher", "succeeded"), run_record(4, "popularity", "cancelled")]  # fmt: skip
    assert [r.id for r in teacher_choices(runs)] == [3, 1]
    assert not forms.has_popularity(runs)
    assert forms.has_popularity([*runs, run_record(5, "popularity", "queued")])
    assert forms.finished_runs([1, 2, 3], active=[2]) == [1, 3]
    assert run_title(runs[0]) == "#1 teacher sasrec"  # the default label has the id
    named = replace(runs[0], name="big one")
    assert run_title(named) == "#1 big one"
    assert run_title(replace(runs[0], name="#1 big one")) == "#1 big one"  # not "#1 #1 ..."
    assert run_title(Progress(run_id=4, status="running", label="big")) == "#4 big"


def test_progress_text_and_durations():
    assert format_duration(None) == "-"
    assert format_duration(12.4) == "12 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3720) == "1 h 02 min"
    running = Progress(run_id=1, status="running", label="t", epoch=3, total_epochs=20,
                       fraction=0.15, eta_seconds=75, loss=0.53211, val_metric=0.1234)  # fmt: skip
    assert forms.progress_text(running) == (
        "epoch 3/20 · ETA 1 min 15 s · loss 0.5321 · val NDCG@10 0.1234"
    )
    queued = Progress(run_id=1, status="queued", label="t", message="waiting for a worker")
    assert forms.progress_text(queued) == "queued: waiting for a worker"
    starting = Progress(run_id=1, status="running", label="t", message="loading data")
    assert forms.progress_text(starting) == "loading data"
