"""AppTest of the Compare page: empty and seeded stores, preselection, the table, URL state,
latency on demand in one chosen setting, the sample recommendations and the what-if session."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.ingestion.registry import load_dataset
from core.store import Store
from tests import apptest

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "compare.py")


pytestmark = pytest.mark.usefixtures("fresh_app")


def run_page(**query: str) -> AppTest:
    return apptest.run_page("compare", 90, **query)


def students(ids) -> list[int]:
    return sorted([ids["popularity"], ids["student-no-teacher"], ids["student-soft"]])


def test_empty_store_explains_what_is_needed(home):
    at = run_page()
    assert "finished teacher" in at.info[0].value
    assert len(at.dataframe) == 0 and len(at.selectbox) == 0


def test_teacher_is_pinned_with_its_students_and_popularity(seeded_home):
    _, ids = seeded_home
    at = run_page()
    assert at.selectbox(key="compare_teacher").value == ids["teacher"]
    assert sorted(at.multiselect(key=f"compare_runs_{ids['teacher']}").value) == students(ids)
    table = at.dataframe[0].value
    assert table["run_id"].tolist() == [ids["teacher"], *students(ids)]
    assert table["ndcg@10 kept %"].iloc[0] == pytest.approx(100.0)
    assert len(at.get("download_button")) == 2
    assert at.toggle(key="compare_diff_only").value is True
    diff = at.dataframe[1].value
    assert "model.dim" in diff.index and "train.seed" not in diff.index
    assert at.query_params["teacher"] == str(ids["teacher"])
    assert at.query_params["runs"] == ",".join(map(str, students(ids)))
    assert any("Latency not measured yet" in c.value for c in at.caption)
    at.button_group(key="compare_k").set_value(20).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "ndcg@20 kept %" in table.columns and "ndcg@10" not in table.columns


def test_sample_recommendations_show_titles(seeded_home):
    _, ids = seeded_home
    at = run_page()
    store = Store()
    data = load_dataset(store, ids["dataset"])
    store.close()
    user = at.selectbox(key="compare_user").value
    assert user in data.user_index and at.query_params["user"] == user
    titles = set(map(str, data.titles))
    history, *lists = at.dataframe[2:]
    assert set(history.value["title"]) <= titles and len(history.value) > 0
    assert len(lists) == 4  # the teacher and three runs, side by side
    for frame in lists:
        assert len(frame.value) == 10 and set(frame.value["title"]) <= titles
    assert lists[0].value["shared"].all()
    assert [t.value for t in at.text][:2] == [f"#{ids['teacher']} teacher", "#1 popularity"]
    at.button(key="compare_random_user").click().run()
    assert not at.exception and at.selectbox(key="compare_user").value in data.user_index


def test_query_params_prefill_and_bad_values_are_ignored(seeded_home):
    _, ids = seeded_home
    store = Store()
    data = load_dataset(store, ids["dataset"])
    store.close()
    user = str(data.user_ids[data.eval_users("test")[3]])
    at = run_page(teacher=str(ids["teacher"]), runs=f"{ids['student-soft']},999,x", user=user)
    assert at.multiselect(key=f"compare_runs_{ids['teacher']}").value == [ids["student-soft"]]
    assert at.dataframe[0].value["run_id"].tolist() == [ids["teacher"], ids["student-soft"]]
    assert at.selectbox(key="compare_user").value == user

    at = run_page(teacher="12345", runs="nonsense", user="nobody")
    assert at.selectbox(key="compare_teacher").value == ids["teacher"]
    assert sorted(at.multiselect(key=f"compare_runs_{ids['teacher']}").value) == students(ids)
    assert at.selectbox(key="compare_user").value in data.user_index


def test_measure_latency_fills_the_table_and_persists(seeded_home):
    _, ids = seeded_home
    at = run_page(runs=str(ids["popularity"]))
    assert at.button_group(key="compare_runtime").value == "torch"
    assert at.selectbox(key="compare_threads").value == 1
    at.button(key="compare_measure").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert (table["p50_ms"] > 0).all() and (table["latency"] == "PyTorch eager, 1 thread").all()
    store = Store()
    (first,) = store.latencies(ids["teacher"])
    assert (first.runtime, first.batch, first.threads) == ("torch", 1, 1)
    store.close()
    assert not any("Latency not measured yet" in c.value for c in at.caption)
    # A re-measure replaces the figure shown (both stay in the store).
    at.button(key="compare_measure").click().run()
    store = Store()
    newest = store.latencies(ids["teacher"])[-1]
    store.close()
    assert newest.id != first.id
    assert at.dataframe[0].value["p50_ms"].iloc[0] == pytest.approx(newest.p50)
    # A fresh session reads the stored figure.
    st.cache_resource.clear()
    again = run_page(runs=str(ids["popularity"]))
    assert again.dataframe[0].value["p50_ms"].iloc[0] == pytest.approx(newest.p50)


def test_one_runtime_and_thread_count_per_comparison(seeded_home):
    _, ids = seeded_home
    at = run_page(runs=str(ids["student-soft"]))
    at.button(key="compare_measure").click().run()  # PyTorch, 1 thread
    at.button_group(key="compare_runtime").set_value("onnxruntime").run()
    table = at.dataframe[0].value
    # No run of the seeded store has an ONNX export: no PyTorch figure stands in for one.
    assert table["p50_ms"].isna().all() and (table["latency"] == "no ONNX export").all()
    assert any(c.value.startswith("No ONNX export") for c in at.caption)
    at.button(key="compare_measure").click().run()
    assert not at.exception and not at.error
    assert any("No ONNX export" in c.value for c in at.caption)
    if len(at.selectbox(key="compare_threads").options) > 1:
        at.button_group(key="compare_runtime").set_value("torch").run()
        at.selectbox(key="compare_threads").set_value(2).run()
        # Figures timed with 1 thread are not shown as 2-thread figures.
        assert at.dataframe[0].value["p50_ms"].isna().all()


def test_a_figure_older_than_the_checkpoint_is_not_shown(seeded_home):
    _, ids = seeded_home
    store = Store()
    soft = store.get_run(ids["student-soft"])
    record = store.add_latency(soft.id, "torch", 1, 4.0, 5.0, 6.0, 250.0, threads=1)
    store.close()
    later = record.created.timestamp() + 1
    os.utime(soft.checkpoint_path, (later, later))  # trained again after it was timed
    at = run_page(runs=str(ids["student-soft"]))
    table = at.dataframe[0].value.set_index("run_id")
    assert math.isnan(table.loc[soft.id, "p50_ms"])
    assert table.loc[soft.id, "latency"] == "re-measure"
    assert any(c.value.startswith("Re-measure") for c in at.caption)


# --------------------------------------------------------------------------- what-if
def product_picker(at: AppTest):
    (picker,) = [s for s in at.selectbox if s.label == "Product"]
    return picker


def whatif_lists(at: AppTest) -> list:
    """The what-if lists: the dataframes after the sample lists (history + 4 lists)."""
    return at.dataframe[2 + 1 + 4 :]


def test_whatif_session_by_title_search_and_edits(seeded_home):
    _, ids = seeded_home
    store = Store()
    data = load_dataset(store, ids["dataset"])
    store.close()
    at = run_page()
    assert any("session is empty" in i.value for i in at.info) and whatif_lists(at) == []
    at.text_input(key="whatif_query").input("usb-c").run()
    pick = product_picker(at)
    assert len(pick.options) > 1 and all("usb-c" in o.lower() for o in pick.options)
    first = pick.value
    at.button(key="whatif_add").click().run()
    product_picker(at).select_index(1).run()
    second = product_picker(at).value
    at.button(key="whatif_add").click().run()
    assert not at.exception and not at.error
    key = f"whatif_session_{ids['dataset']}"
    session = at.session_state[key]
    assert session == [first, second] and "usb-c" in str(data.titles[second]).lower()
    lists = whatif_lists(at)
    assert len(lists) == 4  # teacher, two sasrec students and popularity; no user-only model
    titles = set(map(str, data.titles))
    for frame in lists:
        assert len(frame.value) == 10 and set(frame.value["title"]) <= titles
    assert lists[0].value["shared"].all()
    assert any("ms" in c.value and "Jaccard@10" in c.value for c in at.caption)
    at.button(key="whatif_up_1").click().run()
    assert at.session_state[key] == session[::-1]
    at.button(key="whatif_remove_0").click().run()
    assert at.session_state[key] == session[:1]
    # An unknown product: one sentence, and the lists stay.
    at.text_input(key="whatif_query").input("no such product anywhere").run()
    assert any("No product title contains" in i.value for i in at.info)
    assert len(whatif_lists(at)) == 4 and at.session_state[key] == session[:1]
    # An empty session keeps the lists it had.
    at.button(key="whatif_remove_0").click().run()
    assert at.session_state[key] == []
    assert any("session is empty" in i.value for i in at.info)
    kept = whatif_lists(at)
    assert len(kept) == 4 and kept[0].value["title"].tolist() == lists_for(data, session[:1])


def lists_for(data, session) -> list[str]:
    """The teacher's what-if list titles, straight from core (the page must show the same)."""
    from core.runner import run_model
    from core.views import whatif

    store = Store()
    try:
        teacher = max(r.id for r in store.list_runs(role="teacher"))
        model = run_model(store, teacher)
        items, _ = whatif.recommend_session(model, data, session)
    finally:
        store.close()
    return [str(data.titles[i]) for i in items]


def test_whatif_starts_from_the_sample_users_history(seeded_home):
    _, ids = seeded_home
    store = Store()
    data = load_dataset(store, ids["dataset"])
    store.close()
    at = run_page()
    user = data.user_index[at.selectbox(key="compare_user").value]
    at.button(key="whatif_from_user").click().run()
    assert not at.exception and not at.error
    session = at.session_state[f"whatif_session_{ids['dataset']}"]
    assert tuple(session) == tuple(data.history_sequences("test")[user][-20:].tolist())
    assert len(whatif_lists(at)) == 4
    at.button(key="whatif_clear").click().run()
    assert at.session_state[f"whatif_session_{ids['dataset']}"] == []


def test_renders_through_the_app_navigation(seeded_home):
    _, ids = seeded_home
    app = Path(PAGE).parent.parent / "app.py"
    at = AppTest.from_file(str(app), default_timeout=90).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and [t.value for t in at.title] == ["Compare"]
    assert at.dataframe[0].value["run_id"].tolist() == [ids["teacher"], *students(ids)]
