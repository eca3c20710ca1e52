"""Compare: one teacher pinned as the reference, its students and baselines side by side.

A table (quality at K, % of the teacher kept, overlap, size, latency), the config
settings that differ, a Pareto chart of quality vs latency, % kept bars, validation
curves, CSV/Markdown export, and live sample recommendations for one user. The teacher,
the runs and the user live in the URL (?teacher=2&runs=3,4&user=u1) so a view can be shared.
"""

from __future__ import annotations

import streamlit as st

from core import compare
from core.registry import load_dataset
from pages.common import get_store, guarded

TEACHER_KEY = "compare_teacher"
USER_KEY = "compare_user"
PER_ROW = 3


def prefill(key: str, value, valid) -> None:
    """Seed a widget from the URL once per session, ignoring values that are not options."""
    if key not in st.session_state and value is not None and value in valid:
        st.session_state[key] = value


def column_config(table, k: int) -> dict:
    formats = compare.table_formats(table, k)
    config = {
        c: st.column_config.NumberColumn(label, format=fmt) for c, (label, fmt) in formats.items()
    }
    return config | {"runtime": st.column_config.TextColumn("latency runtime")}


def pick_random_user(data) -> None:
    st.session_state[USER_KEY] = compare.random_user(data)


def samples(store, teacher, runs, data) -> None:
    st.subheader("Sample recommendations")
    users = compare.find_users(data, limit=1)
    if not users:
        st.info("No user in this dataset has a held-out test item.")
        return
    if st.session_state.get(USER_KEY) not in data.user_index:  # another teacher's dataset
        st.session_state.pop(USER_KEY, None)
    prefill(USER_KEY, st.query_params.get("user"), data.user_index)
    st.session_state.setdefault(USER_KEY, users[0])
    left, middle, right = st.columns([2, 2, 1], vertical_alignment="bottom")
    query = left.text_input("Search user ids", key="compare_user_search", placeholder="e.g. u00042")
    options = compare.find_users(data, query, limit=50)
    current = st.session_state[USER_KEY]
    raw = middle.selectbox("User", [current, *[u for u in options if u != current]], key=USER_KEY)
    right.button("Random user", key="compare_random_user", on_click=pick_random_user, args=(data,))
    st.query_params["user"] = raw
    user = compare.user_index(data, raw)

    st.markdown("**Recent history** (train + validation, newest first)")
    st.dataframe(compare.user_history(data, user), hide_index=True)
    models = compare.load_models(store, [teacher, *runs])
    lists = compare.sample_recommendations(data, user, models, k=10)
    st.caption("Green: also in the teacher's top 10. Amber: the user's held-out test item.")
    for start in range(0, len(lists), PER_ROW):
        for col, rec in zip(st.columns(PER_ROW), lists[start : start + PER_ROW], strict=False):
            with col:
                show_list(rec)


def show_list(rec: compare.RecommendationList) -> None:
    st.text(rec.title)
    overlap = "reference" if rec.jaccard is None else f"Jaccard@10 {rec.jaccard:.2f}"
    hit = "test item hit" if rec.test_hit else "test item missed"
    st.caption(f"{overlap} · {hit} · {rec.ms:.1f} ms")
    st.dataframe(
        compare.style_recommendations(rec.items, highlight_shared=rec.jaccard is not None),
        hide_index=True,
        column_order=["rank", "title", "category"],
        column_config={"rank": st.column_config.NumberColumn("#", width="small")},
    )


def charts(store, table, teacher, runs, k: int) -> None:
    pareto, kept, curves = st.tabs(
        ["Quality vs latency", "% of the teacher kept", "Validation curves"]
    )
    with pareto:
        missing = compare.unmeasured_runs(table)
        if len(missing) < len(table):
            st.altair_chart(compare.pareto_chart(table, k), width="stretch")
            st.caption("Bubble area = parameters; the dashed step line is the Pareto frontier.")
        if missing:
            st.caption("Latency not measured yet: " + compare.md_escape(", ".join(missing)))
    with kept:
        if len(table) > 1:
            st.altair_chart(compare.kept_chart(table, k), width="stretch")
        else:
            st.caption("Add runs to see how much of the teacher they keep.")
    with curves:
        st.altair_chart(
            compare.curves_chart(compare.validation_curves(store, [teacher, *runs])),
            width="stretch",
        )


def choose_runs(store, teachers):
    """The pinned teacher and the runs compared with it, prefilled once from the URL."""
    by_id = {t.id: t for t in teachers}
    if st.session_state.get(TEACHER_KEY) not in by_id:  # e.g. deleted on the Runs page
        st.session_state.pop(TEACHER_KEY, None)
    prefill(TEACHER_KEY, (compare.parse_ids(st.query_params.get("teacher")) or [None])[0], by_id)

    def label(i: int) -> str:
        return f"{compare.run_title(by_id[i])} · {by_id[i].num_params or 0:,} params"

    teacher = by_id[
        st.selectbox("Teacher (the reference)", list(by_id), format_func=label, key=TEACHER_KEY)
    ]
    candidates = {r.id: r for r in compare.compare_candidates(store, teacher)}
    key = f"compare_runs_{teacher.id}"
    from_url = [i for i in compare.parse_ids(st.query_params.get("runs")) if i in candidates]
    kept = [i for i in st.session_state.get(key, []) if i in candidates]
    st.session_state[key] = (
        kept if key in st.session_state else from_url or compare.default_selection(store, teacher)
    )
    chosen = st.multiselect(
        "Compared with (succeeded runs on the same dataset)", list(candidates), key=key,
        format_func=lambda i: f"{compare.run_title(candidates[i])} ({candidates[i].role})",
    )  # fmt: skip
    st.query_params["teacher"], st.query_params["runs"] = (
        str(teacher.id),
        ",".join(map(str, chosen)),
    )
    return teacher, [candidates[i] for i in chosen]


def main() -> None:
    st.title("Compare")
    store = get_store()
    teachers = guarded(lambda: compare.teacher_choices(store), "reading the runs")
    if not teachers:
        st.info(
            "Nothing to compare yet: Compare needs a finished teacher. Load data on the Data "
            "page and train a teacher and its students on the Train page."
        )
        return
    teacher, runs = choose_runs(store, teachers)
    data = guarded(lambda: load_dataset(store, teacher.dataset_id), "loading the dataset")
    if data is None:
        return
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    k = left.segmented_control("K", compare.KS, default=10, key="compare_k") or 10
    tip = "p50 of single requests: score the catalog, mask the history, take the top 10."
    if right.button("Measure latency (PyTorch)", key="compare_measure", help=tip):
        with st.spinner("Timing single requests..."):
            guarded(
                lambda: compare.measure_runs(store, [teacher, *runs], data), "measuring latency"
            )
    table = guarded(lambda: compare.comparison_table(store, teacher, runs, k), "building the table")
    if table is None:
        return
    order = [c for c in table if c != "run_id"]
    st.dataframe(table, hide_index=True, column_config=column_config(table, k), column_order=order)
    exports = [
        ("CSV", compare.to_csv, "text/csv"),
        ("Markdown", compare.to_markdown, "text/markdown"),
    ]
    for col, (label, render, mime) in zip(st.columns([1, 1, 3]), exports, strict=False):
        name = f"compare-teacher-{teacher.id}.{'csv' if label == 'CSV' else 'md'}"
        col.download_button(
            f"Download {label}", render(table), name, mime, key=f"compare_{label.lower()}"
        )
    with st.expander("Config differences"):
        only = st.toggle("Differences only", value=True, key="compare_diff_only")
        configs = {compare.run_title(r): r.config for r in [teacher, *runs]}
        st.dataframe(compare.config_differences(configs, only_differences=only))
    charts(store, table, teacher, runs, k)
    guarded(lambda: samples(store, teacher, runs, data), "computing sample recommendations")


main()
