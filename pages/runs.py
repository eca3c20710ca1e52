"""Runs: every run in the store, filterable, and a detail view of one of them.

The detail view shows the config, per-epoch curves, test metrics (overall and per user
slice), the error of a failed run, its files, tags and notes, and deletes a run (after a
confirmation) together with its files. Tables come from ``core.views.runs``, the curves from
``core.views.charts``.
"""

from __future__ import annotations

import streamlit as st

from core.enums import Role, Status
from core.metrics import SLICES
from core.runner import forget_run
from core.views import charts
from core.views.runs import ENDED_BADLY, artifacts_frame, filter_runs, metrics_frame, runs_frame
from core.views.text import md_escape, parse_ids, run_title
from pages.common import fmt_int, get_store, guarded, show_chart

SELECTED = "runs_selected"
FILTERS = ("runs_filter_dataset", "runs_filter_role", "runs_filter_status")

TABLE_COLUMNS = {
    "id": st.column_config.NumberColumn("#", format="%d", width="small"),
    "params": st.column_config.NumberColumn("parameters", format="localized"),
    "ndcg@10": st.column_config.NumberColumn("NDCG@10", format="%.4f"),
    "val_ndcg": st.column_config.LineChartColumn("validation NDCG", y_min=0.0),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
    "duration_s": st.column_config.NumberColumn("duration", format="%.1f s"),
    "teacher": st.column_config.NumberColumn("teacher #", format="%d"),
}


def open_run(run_id: int) -> None:
    """Callback: show another run (e.g. a student's teacher), clearing filters that hide it."""
    for key in FILTERS:
        st.session_state[key] = []
    st.session_state[SELECTED] = run_id


def overview(store, run, titles: dict[int, str]) -> None:
    st.text(f"{run.role} · {run.model} · {run.status} · {fmt_int(run.num_params)} parameters")
    if run.duration_seconds is not None:
        st.caption(f"Created {run.created:%Y-%m-%d %H:%M} UTC, ran {run.duration_seconds:.1f} s.")
    if run.status in ENDED_BADLY:
        st.error(md_escape(run.error or f"The run was {run.status}."), icon=":material/error:")
    for note in run.progress.get("training_notes") or ():
        st.caption(md_escape(note))
    if run.teacher_run_id is not None:
        teacher = titles.get(run.teacher_run_id, f"#{run.teacher_run_id} (deleted)")
        left, right = st.columns([3, 1])
        left.text(f"Teacher: {teacher}")
        if run.teacher_run_id in titles:
            right.button(
                "Open the teacher",
                key=f"runs_open_teacher_{run.id}",
                on_click=open_run,
                args=(run.teacher_run_id,),
            )


def curves(store, run) -> None:
    epochs = store.epochs(run.id)
    if not epochs:
        st.caption("No epochs recorded for this run.")
        return
    show_chart("training", charts.training_frame(epochs))


def metrics(store, run) -> None:
    results = store.results(run.id, "test")
    if not results:
        st.caption("No test metrics yet (the run has not finished).")
        return
    st.dataframe(
        metrics_frame(results),
        column_config={
            c: st.column_config.NumberColumn(c, format="%.4f") for c in ("all", *SLICES)
        },
    )
    st.caption(
        "Users are sliced by training activity: cold (<= 5 interactions), heavy (top 10%), warm (the rest)."
    )


def manage(store, run) -> None:
    st.text("Tags: " + (", ".join(run.tags) or "none"))
    with st.form(f"runs_tag_form_{run.id}", clear_on_submit=True, border=False):
        tag = st.text_input("Add a tag", key=f"runs_tag_new_{run.id}")
        if st.form_submit_button("Add tag") and guarded(lambda: store.add_tag(run.id, tag) or True):
            st.rerun()
    if run.tags:
        gone = st.selectbox("Remove a tag", run.tags, key=f"runs_tag_remove_{run.id}")
        if st.button("Remove tag", key=f"runs_tag_remove_btn_{run.id}") and guarded(
            lambda: store.remove_tag(run.id, gone) or True
        ):
            st.rerun()
    notes = st.text_area("Notes", value=run.notes or "", key=f"runs_notes_{run.id}")
    if st.button("Save notes", key=f"runs_notes_save_{run.id}") and guarded(
        lambda: store.set_notes(run.id, notes)
    ):
        st.toast("Notes saved.", icon=":material/check:")
    st.divider()
    sure = st.checkbox(
        f"I understand that deleting run #{run.id} removes its metrics and files for good.",
        key=f"runs_delete_confirm_{run.id}",
    )
    deleted = st.button(
        "Delete run", type="primary", disabled=not sure, key=f"runs_delete_{run.id}"
    )
    if deleted and guarded(lambda: store.delete_run(run.id) or True, "deleting the run"):
        forget_run(run.id)
        st.session_state.pop(SELECTED, None)
        st.toast(f"Run #{run.id} deleted.", icon=":material/delete:")
        st.rerun()


def main() -> None:
    st.title("Runs")
    store = get_store()
    runs = guarded(store.list_runs, "reading the runs")
    datasets = guarded(store.list_datasets, "reading the datasets") or []
    if not runs:
        st.info(
            "No runs yet. Load the demo shop or your own data on the Data page, "
            "then train a teacher and a student on the Train page."
        )
        return
    names = {d.id: d.name for d in datasets}
    choices = [sorted({r.dataset_id for r in runs}), list(Role), list(Status)]
    labels = [lambda i: names.get(i, f"#{i}"), str, str]
    picked = [
        col.multiselect(
            key.split("_")[-1].title(), opts, format_func=fmt, key=key, placeholder="All"
        )
        for col, key, opts, fmt in zip(st.columns(3), FILTERS, choices, labels, strict=True)
    ]
    shown = filter_runs(runs, *picked)
    st.dataframe(
        runs_frame(store, shown, datasets),
        hide_index=True,
        column_config=TABLE_COLUMNS,
    )
    if not shown:
        st.caption("No run matches these filters.")
        return

    titles = {r.id: run_title(r) for r in runs}
    options = [r.id for r in sorted(shown, key=lambda r: -r.id)]
    wanted = parse_ids(st.query_params.get("run"))
    if SELECTED not in st.session_state and wanted and wanted[0] in options:
        st.session_state[SELECTED] = wanted[0]
    if st.session_state.get(SELECTED) not in options:
        st.session_state.pop(SELECTED, None)
    chosen = st.selectbox("Run details", options, format_func=titles.get, key=SELECTED)
    run = next(r for r in shown if r.id == chosen)
    st.query_params["run"] = str(run.id)

    tabs = st.tabs(["Overview", "Curves", "Metrics", "Config", "Files", "Tags, notes, delete"])
    with tabs[0]:
        overview(store, run, titles)
    with tabs[1]:
        curves(store, run)
    with tabs[2]:
        metrics(store, run)
    with tabs[3]:
        st.json(run.config, expanded=2)
    with tabs[4]:
        st.dataframe(artifacts_frame(store.artifacts(run.id)), hide_index=True)
    with tabs[5]:
        manage(store, run)


main()
