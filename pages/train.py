"""Train: queue a teacher, distill students from a finished one, and watch runs train live.

Forms only collect values; core.views.forms turns them into RunSpecs and the job manager runs
them. The live panel polls the job manager's progress snapshots while something runs.
"""

from __future__ import annotations

import streamlit as st

from core.distill import LOSSES
from core.enums import TRAINABLE_FAMILIES
from core.records import DatasetRecord
from core.runner import submit_run
from core.views import charts, forms
from core.views.runs import teacher_choices
from core.views.text import run_title
from pages.common import (
    LIVE_POLL_S,
    after_submit,
    dataset_picker,
    fmt_int,
    get_jobs,
    get_store,
    guarded,
    show_chart,
)

WATCH_KEY = "train_watch"  # run ids whose end gets a toast
TOASTS_KEY = "train_toasts"  # toasts to show after a full rerun


def number_fields(role: str, fields: list[forms.NumberField], base: object) -> dict:
    """One row of number inputs, defaults from the preset ``base``."""
    values = {}
    for col, field in zip(st.columns(max(1, len(fields))), fields, strict=False):
        default = getattr(base, field.name)
        values[field.name] = col.number_input(
            field.label,
            field.low,
            field.high,
            default,
            field.step,
            format=field.fmt,
            key=f"{role}_{field.name}",
        )
    return values


def train_fields(role: str, base: object) -> dict:
    values = number_fields(role, list(forms.TRAIN_FIELDS), base)
    values["device"] = st.selectbox("Device", forms.DEVICES, key=f"{role}_device")
    return values


def launch(launches: list[forms.Launch], dataset_id: int) -> None:
    jobs = get_jobs()
    ids = [submit_run(jobs, dataset_id, x.spec, teacher_run_id=x.teacher_run_id) for x in launches]
    st.session_state[WATCH_KEY] = st.session_state.get(WATCH_KEY, []) + ids
    st.toast(
        f"Queued {len(ids)} run(s): " + ", ".join(f"#{i}" for i in ids), icon=":material/schedule:"
    )
    after_submit(ids)


def teacher_section(dataset: DatasetRecord) -> None:
    family = st.selectbox(
        "Family", TRAINABLE_FAMILIES, format_func=forms.FAMILY_LABELS.get, key="teacher_family"
    )
    with st.form("teacher_form"):
        plan = forms.presets(dataset)  # the dataset's recipe, as `python -m core run` uses
        sizes = number_fields("teacher", forms.size_fields(family), plan.teacher)
        train = train_fields("teacher", plan.teacher_train)
        name = st.text_input("Run name (optional)", max_chars=80, key="teacher_name")
        submitted = st.form_submit_button(
            "Train teacher", type="primary", icon=":material/play_arrow:"
        )
    if submitted:
        guarded(
            lambda: launch(forms.teacher_launches(family, sizes, train, name, plan), dataset.id),
            "queueing the teacher",
        )


def student_section(dataset: DatasetRecord) -> None:
    runs = get_store().list_runs(dataset_id=dataset.id)
    teachers = {r.id: r for r in teacher_choices(runs)}
    if not teachers:
        st.info("Train a teacher on this dataset first; students learn from a finished teacher.")
        return
    teacher = teachers[
        st.selectbox(
            "Teacher run",
            list(teachers),
            key="student_teacher",
            format_func=lambda i: (
                f"{run_title(teachers[i])} · {fmt_int(teachers[i].num_params)} parameters"
            ),
        )
    ]
    family = st.selectbox(
        "Family", TRAINABLE_FAMILIES, format_func=forms.FAMILY_LABELS.get, key="student_family"
    )
    preset = forms.presets(dataset)
    sizes = number_fields("student", forms.size_fields(family), preset.student)
    model = guarded(lambda: forms.model_config(family, base=preset.student, **sizes))
    if model is None:
        return
    params = forms.parameter_count(model, dataset.n_users, dataset.n_items)
    ratio = forms.size_ratio(params, teacher.num_params)
    st.metric(
        "Student parameters",
        f"{params:,}",
        f"{ratio:.1%} of the teacher" if ratio else None,
        delta_color="off",
        delta_arrow="off",
    )
    method = st.selectbox("Distillation method", list(forms.METHOD_KNOBS), key="student_method")
    st.caption(f"{LOSSES[method].description}  \n`{LOSSES[method].formula}`")
    names = forms.METHOD_KNOBS[method]
    knobs = number_fields(
        f"student_{method}",
        [forms.KNOB_FIELDS[n] for n in names if n in forms.KNOB_FIELDS],
        forms.DISTILL_DEFAULTS,
    )
    if "dynamic" in names:
        knobs["dynamic"] = st.checkbox("Dynamic rank-discrepancy weights", key="student_dynamic")
    train = train_fields("student", preset.student_train)
    twin = st.checkbox(
        "Also train the same student without a teacher", True, key="student_baseline"
    )

    def plan() -> list[forms.Launch]:
        train_config = forms.train_config(base=preset.student_train, **train)
        distill = forms.distill_config(method, **knobs)
        popularity = not forms.has_popularity(runs)
        return forms.student_launches(
            model,
            train_config,
            distill,
            teacher_run_id=teacher.id,
            with_baseline=twin,
            with_popularity=popularity,
        )

    if st.button(
        "Train student", type="primary", icon=":material/play_arrow:", key="student_launch"
    ):
        guarded(lambda: launch(plan(), dataset.id), "queueing the student")


def cancel(run_id: int) -> None:
    guarded(lambda: get_jobs().cancel(run_id), "cancelling the run")


def finished_toasts(active: list[int]) -> list[str]:
    """Messages for watched runs that ended since the last look; updates the watch list.

    ``active`` are the ids of the runs queued or running now (read once per poll)."""
    watched = st.session_state.get(WATCH_KEY, [])
    done = forms.finished_runs(watched, active)
    st.session_state[WATCH_KEY] = sorted(set(watched) - set(done) | set(active))
    store = get_store()
    return [f"{run_title(run := store.get_run(i))}: {run.status}" for i in done]


def live_run(progress) -> None:
    """One active run: its progress, a cancel button and (after an epoch) its curves."""
    with st.container(border=True):
        head, button = st.columns([6, 1])
        head.text(f"{run_title(progress)} · {progress.status}")
        button.button(
            "Cancel",
            key=f"train_cancel_{progress.run_id}",
            on_click=cancel,
            args=(progress.run_id,),
        )
        st.progress(progress.fraction, text=forms.progress_text(progress))
        if progress.epoch > 0:  # no epoch recorded yet: nothing to read or draw
            frame = charts.training_frame(get_store().epochs(progress.run_id))
            if not frame.empty:
                show_chart("training", frame)


st.title("Train")
for message in st.session_state.pop(TOASTS_KEY, []):
    st.toast(message, icon=":material/flag:")
dataset = dataset_picker("train_dataset")
if dataset is None:
    st.info("No dataset yet: load the demo shop or upload one on the Data page.")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/table_chart:")
else:
    teacher_tab, student_tab = st.tabs(["Teacher", "Student"])
    with teacher_tab:
        teacher_section(dataset)
    with student_tab:
        student_section(dataset)
polling = bool(guarded(get_jobs().active, "reading the active runs"))


@st.fragment(run_every=LIVE_POLL_S if polling else None)
def live_panel() -> None:
    st.subheader("Live runs")
    # One store read per poll: the active runs' progress snapshots.
    active = guarded(get_jobs().active, "reading the active runs") or []
    ids = [p.run_id for p in active]
    messages = guarded(lambda: finished_toasts(ids), "checking finished runs") or []
    if polling and not active:
        st.session_state[TOASTS_KEY] = messages
        st.rerun()  # a full rerun stops the timer and lists the new teacher
    for message in messages:
        st.toast(message, icon=":material/flag:")
    if not active:
        st.caption("Nothing is training right now.")
    for progress in active:
        live_run(progress)


live_panel()
