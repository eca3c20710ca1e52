"""AppTest of the Compare page: empty and seeded stores, preselection, the table, URL state,
latency on demand and the sample recommendations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.registry import load_dataset
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
    at.button(key="compare_measure").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert (table["p50_ms"] > 0).all() and (table["runtime"] == "torch").all()
    store = Store()
    assert [r.runtime for r in store.latencies(ids["teacher"])] == ["torch"]
    store.close()
    assert not any("Latency not measured yet" in c.value for c in at.caption)
    # A fresh session reads the stored figure.
    st.cache_resource.clear()
    again = run_page(runs=str(ids["popularity"]))
    assert not math.isnan(again.dataframe[0].value["p50_ms"].iloc[0])


def test_renders_through_the_app_navigation(seeded_home):
    _, ids = seeded_home
    app = Path(PAGE).parent.parent / "app.py"
    at = AppTest.from_file(str(app), default_timeout=90).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and [t.value for t in at.title] == ["Compare"]
    assert at.dataframe[0].value["run_id"].tolist() == [ids["teacher"], *students(ids)]
