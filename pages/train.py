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
from core.views import forms
from core.views.runs import teacher_choices
from core.views.text import run_title
from pages.common import (
    after_submit,
    dataset_picker,
    fmt_int,
    get_jobs,
    get_store,
    guarded,
)
from pages.train_live import TOASTS_KEY, WATCH_KEY, show_live_runs


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
    values = number_fields(role, forms.train_fields(base), base)
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


def teacher_section(dataset: DatasetRecord, plan: forms.Recipe) -> None:
    family = st.selectbox(
        "Family", TRAINABLE_FAMILIES, format_func=forms.FAMILY_LABELS.get, key="teacher_family"
    )
    with st.form("teacher_form"):
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


def student_section(dataset: DatasetRecord, preset: forms.Recipe) -> None:
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
    knobs["teacher_init"] = st.checkbox(
        forms.TEACHER_INIT_LABEL, key="student_teacher_init", help=forms.TEACHER_INIT_HELP
    )
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


st.title("Train")
for message in st.session_state.pop(TOASTS_KEY, []):
    st.toast(message, icon=":material/flag:")
dataset = dataset_picker("train_dataset")
if dataset is None:
    st.info("No dataset yet: load the demo shop or upload one on the Data page.")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/table_chart:")
else:
    teacher_tab, student_tab = st.tabs(["Teacher", "Student"])
    plan = forms.presets(dataset)  # the dataset's recipe, as `python -m core run` uses
    with teacher_tab:
        teacher_section(dataset, plan)
    with student_tab:
        student_section(dataset, plan)
show_live_runs(bool(guarded(get_jobs().active, "reading the active runs")))
