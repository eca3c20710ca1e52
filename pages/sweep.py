"""Sweep: "how small can it get?" Students of several sizes distilled from one teacher.

One click queues a run plan (core.plans.submit_sweep): per size and seed, a distilled student
and its no-teacher twin. Plans live in the store, so the page reads the sweeps from there (a
reload or another tab shows the same) and polls the chosen one with ``st.fragment`` while it
runs. Finished runs are drawn against their size (frames: core/views/sweep.py) with a table
and a CSV. A deleted teacher or a size not below the teacher is one sentence, nothing queued.
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core import plans
from core.enums import DISTILL_METHODS, PlanKind
from core.models import ModelConfig
from core.records import DatasetRecord, RunRecord
from core.views import charts, forms, sweep
from core.views.runs import teacher_choices
from core.views.text import md_escape, run_title
from pages.common import LIVE_POLL_S, after_submit, dataset_picker, get_jobs, get_store, guarded

TEACHER_KEY, METHOD_KEY, SEEDS_KEY = "sweep_teacher", "sweep_method", "sweep_seeds"
INIT_KEY = "sweep_teacher_init"
PLAN_KEY, PENDING_KEY = "sweep_plan", "sweep_pending"  # pending: what the click asked for
CHARTS = {"quality": charts.sweep_chart, "latency": charts.sweep_latency_chart}


@st.cache_data(show_spinner=False, max_entries=32)
def size_options(model_json: str, n_users: int, n_items: int) -> list[sweep.SizeOption]:
    return sweep.size_options(ModelConfig.from_dict(json.loads(model_json)), n_users, n_items)


@st.cache_data(show_spinner=False, max_entries=32)
def chart_spec(kind: str, frame: pd.DataFrame) -> dict:
    return CHARTS[kind](frame).to_dict()


def remember_click(sizes_key: str, epochs_key: str) -> None:
    """Keep the values the user saw: a teacher deleted since still gets its sentence."""
    keys = {"teacher": TEACHER_KEY, "method": METHOD_KEY, "seeds": SEEDS_KEY,
            "fractions": sizes_key, "epochs": epochs_key, "teacher_init": INIT_KEY}  # fmt: skip
    st.session_state[PENDING_KEY] = {name: st.session_state.get(k) for name, k in keys.items()}


def queue(asked: dict) -> None:
    plan_id = plans.submit_sweep(
        get_jobs(), asked["teacher"], asked["method"], asked["fractions"] or [], asked["seeds"],
        epochs=asked["epochs"], teacher_init=bool(asked.get("teacher_init")),
    )  # fmt: skip
    st.session_state[PLAN_KEY] = plan_id
    runs = get_store().list_runs(plan_id=plan_id)
    st.toast(f"Queued sweep #{plan_id}: {len(runs)} runs.", icon=":material/schedule:")
    after_submit([r.id for r in runs])


def sweep_form(dataset: DatasetRecord, teachers: list[RunRecord]) -> None:
    by_id = {t.id: t for t in teachers}
    teacher = by_id[
        st.selectbox(
            "Teacher run", list(by_id), key=TEACHER_KEY,
            format_func=lambda i: f"{run_title(by_id[i])} · {by_id[i].num_params or 0:,} params",
        )
    ]  # fmt: skip
    model = json.dumps(teacher.config.get("model") or {}, sort_keys=True)
    options = guarded(lambda: size_options(model, dataset.n_users, dataset.n_items), "sizing")
    if not options:
        return
    by_fraction = {o.fraction: o for o in options}
    recipe = forms.presets(dataset)
    sizes_key = f"sweep_sizes_{teacher.id}"  # the labels (widths) belong to this teacher
    chosen = st.multiselect(
        "Student sizes (share of the teacher's parameters)", list(by_fraction),
        default=sweep.default_sizes(options), key=sizes_key,
        format_func=lambda f: by_fraction[f].label,
    )  # fmt: skip
    method_col, seeds_col, epochs_col = st.columns(3)
    method_col.selectbox(
        "Distillation method", DISTILL_METHODS, key=METHOD_KEY,
        index=list(DISTILL_METHODS).index(recipe.distill.method),
    )  # fmt: skip
    seeds = seeds_col.number_input("Seeds per size", 1, 5, 1, key=SEEDS_KEY)
    most = recipe.student_train.epochs
    epochs_key = f"sweep_epochs_{dataset.id}"  # the most is this dataset's recipe's
    epochs_col.number_input(
        "Epochs at most", 1, most, most, key=epochs_key,
        help="Early stopping may end a run sooner; fewer epochs give a quick first look.",
    )  # fmt: skip
    st.checkbox(
        forms.TEACHER_INIT_LABEL, recipe.distill.teacher_init, key=INIT_KEY,
        help=forms.TEACHER_INIT_HELP,
    )  # fmt: skip
    st.caption(sweep.plan_caption(options, chosen, seeds))
    st.button(
        "Queue the sweep", type="primary", icon=":material/play_arrow:", key="sweep_queue",
        on_click=remember_click, args=(sizes_key, epochs_key),
    )  # fmt: skip


def live_progress(view: plans.PlanView) -> None:
    """Where the sweep is; polls while it runs, and reruns the page when a run ends."""
    running = view.status == "running"
    ended = sum(r.is_terminal for r in view.runs)

    @st.fragment(run_every=LIVE_POLL_S if running else None)
    def panel() -> None:
        now = guarded(lambda: plans.view(get_store(), view.plan.id), "reading the sweep")
        if now is None:
            return
        if running and sum(r.is_terminal for r in now.runs) != ended:
            st.rerun()  # a run ended: redraw the results (and stop polling at the end)
        st.progress(*sweep.progress_line(now))
        if now.status == "running":
            if st.button("Cancel the sweep", key="sweep_cancel", icon=":material/stop:"):
                guarded(lambda: plans.cancel(get_jobs(), now.plan.id), "cancelling the sweep")
                st.rerun()
        elif now.status == "interrupted":
            st.warning("This sweep stopped when its server did. Resume it where it left off.")
            if st.button("Resume the sweep", key="sweep_resume", icon=":material/replay:"):
                guarded(lambda: plans.resume(get_jobs(), now.plan.id), "resuming the sweep")
                st.rerun()
        elif (problem := now.problem) is not None:
            st.caption(f"{run_title(problem)}: {md_escape(problem.error or problem.status)}")

    panel()


def show_results(view: plans.PlanView) -> None:
    results = guarded(lambda: sweep.sweep_results(get_store(), view), "reading the results")
    if results is None:
        return
    if results.finished.empty:
        st.caption("No run of this sweep has finished yet; results appear as runs finish.")
        return
    if results.teacher is None:
        st.caption("This sweep's teacher was deleted: nothing to keep a share of.")
    frame = sweep.chart_frame(results)
    st.vega_lite_chart(chart_spec("quality", frame))
    if (frame["panel"] == sweep.LATENCY_PANEL).any():
        st.vega_lite_chart(chart_spec("latency", frame))
    if results.latency_missing:
        note, button = st.columns([4, 1], vertical_alignment="center")
        note.caption(sweep.LATENCY_NOTE)
        if button.button("Measure latency", key="sweep_measure"):
            with st.spinner(f"Timing single requests ({sweep.SETTING.label})..."):
                timed = guarded(lambda: sweep.measure_latency(get_store(), view, results))
            if timed is not None:
                st.rerun()  # draw the figures just stored
    table = sweep.results_table(results.rows)
    formats = sweep.table_formats().items()
    config = {c: st.column_config.NumberColumn(name, format=f) for c, (name, f) in formats}
    st.dataframe(table, hide_index=True, column_config=config)
    st.download_button(
        "Download CSV (one row per run)", sweep.rows_csv(results.rows),
        f"sweep-{view.plan.id}.csv", "text/csv", key="sweep_csv", on_click="ignore",
    )  # fmt: skip


def show_sweeps(dataset: DatasetRecord) -> None:
    found = get_store().list_plans(kind=PlanKind.SWEEP, dataset_id=dataset.id, limit=20)
    if not found:
        st.caption("No sweep on this dataset yet.")
        return
    by_id = {p.id: p for p in found}
    if st.session_state.get(PLAN_KEY) not in by_id:
        st.session_state.pop(PLAN_KEY, None)  # deleted, or of another dataset: the newest
    plan_id = st.selectbox(
        "Sweep", list(by_id), key=PLAN_KEY,
        format_func=lambda i: f"#{i} {by_id[i].name} · {by_id[i].created:%Y-%m-%d %H:%M}",
    )  # fmt: skip
    view = guarded(lambda: plans.view(get_store(), plan_id), "reading the sweep")
    if view is not None:
        live_progress(view)
        show_results(view)


def main() -> None:
    st.title("Sweep")
    st.caption("How small can it get? Students of several sizes, each with its no-teacher twin.")
    dataset = dataset_picker("sweep_dataset")
    if dataset is None:
        st.info("No dataset yet: load the demo shop or upload one on the Data page.")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/table_chart:")
        return
    teachers = teacher_choices(get_store().list_runs(dataset_id=dataset.id, role="teacher"))
    if teachers:
        sweep_form(dataset, teachers)
    else:
        st.info("Train a teacher on this dataset first: a sweep distils students from it.")
    pending = st.session_state.pop(PENDING_KEY, None)
    if pending and pending.get("teacher") is not None:
        guarded(lambda: queue(pending), "queueing the sweep")
    st.subheader("Sweeps")
    show_sweeps(dataset)


guarded(main, "showing the sweeps")
