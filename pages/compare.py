"""Compare: one teacher pinned as the reference, its students and baselines side by side.

A table (quality at K, % of the teacher kept, overlap, size, latency), the config
settings that differ, a Pareto chart of quality vs latency, % kept bars, validation
curves, CSV/Markdown export, live sample recommendations for one user
(pages/compare_lists.py) and a what-if shopping session (pages/compare_whatif.py). Latency
is shown in one runtime and thread count, picked here and named on the chart. The teacher,
the runs and the user live in the URL (?teacher=2&runs=3,4&user=u1) so a view can be shared.

Chart specs are cached by their tidy frames (``st.cache_data``): building an Altair chart
costs more than reading the store, and the frames only change when the runs do.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.ingestion.registry import load_dataset
from core.views import charts, compare
from core.views.runs import teacher_choices
from core.views.text import md_escape, parse_ids, run_title, to_csv, to_markdown
from pages.common import get_store, guarded
from pages.compare_lists import prefill, samples
from pages.compare_whatif import what_if

TEACHER_KEY = "compare_teacher"
MISSING_LATENCY = {
    compare.NOT_MEASURED: "Latency not measured yet",
    compare.STALE: "Re-measure (the figure is older than the run's model files)",
    compare.NO_ONNX: "No ONNX export (prepare a handoff, or time PyTorch)",
}


def column_config(table, k: int) -> dict:
    formats = compare.table_formats(table, k)
    config = {
        c: st.column_config.NumberColumn(label, format=fmt) for c, (label, fmt) in formats.items()
    }
    return config | {"latency": st.column_config.TextColumn("latency timed in")}


@st.cache_data(show_spinner=False, max_entries=64)
def chart_spec(kind: str, frame: pd.DataFrame, k: int = 10, setting: str = "") -> dict:
    if kind == "pareto":
        return charts.pareto_chart(frame, k, setting).to_dict()
    return (charts.kept_chart if kind == "kept" else charts.curves_chart)(frame).to_dict()


def show_charts(store, table, teacher, runs, k: int, setting: compare.LatencySetting) -> None:
    pareto, kept, curves = st.tabs(
        ["Quality vs latency", "% of the teacher kept", "Validation curves"]
    )
    with pareto:
        missing = compare.missing_latency(table)
        if sum(map(len, missing.values())) < len(table):
            frame = compare.pareto_frame(table, k)
            st.vega_lite_chart(chart_spec("pareto", frame, k, setting.label), width="stretch")
            st.caption("Bubble area = parameters; the dashed step line is the Pareto frontier.")
        for note, names in missing.items():
            st.caption(f"{MISSING_LATENCY[note]}: " + md_escape(", ".join(names)))
    with kept:
        if len(table) > 1:
            st.vega_lite_chart(chart_spec("kept", compare.kept_frame(table, k)), width="stretch")
        else:
            st.caption("Add runs to see how much of the teacher they keep.")
    with curves:
        frame = compare.validation_curves(store, [teacher, *runs])
        st.vega_lite_chart(chart_spec("curves", frame), width="stretch")


def latency_setting(columns) -> compare.LatencySetting:
    """The one runtime and thread count this comparison's latency is timed and shown in."""
    runtime = columns[0].segmented_control(
        "Latency runtime", list(compare.RUNTIME_LABELS), default="torch", key="compare_runtime",
        format_func=compare.RUNTIME_LABELS.get,
    )  # fmt: skip
    threads = columns[1].selectbox("Threads", compare.thread_choices(), key="compare_threads")
    return compare.LatencySetting(runtime or "torch", threads)


def measure(store, runs, data, setting: compare.LatencySetting) -> None:
    with st.spinner(f"Timing single requests ({setting.label})..."):
        result = guarded(
            lambda: compare.measure_runs(store, runs, data, setting), "measuring latency"
        )
    if result and result[1]:
        names = md_escape(", ".join(run_title(r) for r in result[1]))
        st.caption(f"{MISSING_LATENCY[compare.NO_ONNX]}: {names}")


def choose_runs(runs, teachers):
    """The pinned teacher and the runs compared with it, prefilled once from the URL."""
    by_id = {t.id: t for t in teachers}
    if st.session_state.get(TEACHER_KEY) not in by_id:  # e.g. deleted on the Runs page
        st.session_state.pop(TEACHER_KEY, None)
    prefill(TEACHER_KEY, (parse_ids(st.query_params.get("teacher")) or [None])[0], by_id)

    def label(i: int) -> str:
        return f"{run_title(by_id[i])} · {by_id[i].num_params or 0:,} params"

    teacher = by_id[
        st.selectbox("Teacher (the reference)", list(by_id), format_func=label, key=TEACHER_KEY)
    ]
    candidates = {r.id: r for r in compare.compare_candidates(runs, teacher)}
    key = f"compare_runs_{teacher.id}"
    from_url = [i for i in parse_ids(st.query_params.get("runs")) if i in candidates]
    kept = [i for i in st.session_state.get(key, []) if i in candidates]
    st.session_state[key] = (
        kept
        if key in st.session_state
        else from_url or compare.default_selection(list(candidates.values()), teacher)
    )
    chosen = st.multiselect(
        "Compared with (succeeded runs on the same dataset)", list(candidates), key=key,
        format_func=lambda i: f"{run_title(candidates[i])} ({candidates[i].role})",
    )  # fmt: skip
    st.query_params["teacher"], st.query_params["runs"] = (
        str(teacher.id),
        ",".join(map(str, chosen)),
    )
    return teacher, [candidates[i] for i in chosen]


def main() -> None:
    st.title("Compare")
    store = get_store()
    everything = guarded(store.list_runs, "reading the runs") or []
    teachers = teacher_choices(everything)
    if not teachers:
        st.info(
            "Nothing to compare yet: Compare needs a finished teacher. Load data on the Data "
            "page and train a teacher and its students on the Train page."
        )
        return
    teacher, runs = choose_runs(everything, teachers)
    data = guarded(lambda: load_dataset(store, teacher.dataset_id), "loading the dataset")
    if data is None:
        return
    columns = st.columns([1, 2, 1, 2], vertical_alignment="bottom")
    k = columns[0].segmented_control("K", compare.KS, default=10, key="compare_k") or 10
    setting = latency_setting(columns[1:])
    tip = "p50 of single requests: score the catalog, mask the history, take the top 10."
    if columns[3].button("Measure latency", key="compare_measure", help=tip):
        measure(store, [teacher, *runs], data, setting)
    table = guarded(
        lambda: compare.comparison_table(store, teacher, runs, k, setting), "building the table"
    )
    if table is None:
        return
    order = [c for c in table if c != "run_id"]
    st.dataframe(table, hide_index=True, column_config=column_config(table, k), column_order=order)
    exports = [
        ("CSV", to_csv, "text/csv"),
        ("Markdown", to_markdown, "text/markdown"),
    ]
    for col, (label, render, mime) in zip(st.columns([1, 1, 3]), exports, strict=False):
        name = f"compare-teacher-{teacher.id}.{'csv' if label == 'CSV' else 'md'}"
        col.download_button(
            f"Download {label}", render(table), name, mime, key=f"compare_{label.lower()}"
        )
    with st.expander("Config differences"):
        only = st.toggle("Differences only", value=True, key="compare_diff_only")
        configs = {run_title(r): r.config for r in [teacher, *runs]}
        st.dataframe(compare.config_differences(configs, only_differences=only))
    show_charts(store, table, teacher, runs, k, setting)
    samples(store, [teacher, *runs], data)
    what_if(store, [teacher, *runs], data, teacher.dataset_id)


main()
