"""AppTest of the Runs page: empty and seeded stores, filters, detail, tags/notes, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import paths
from core.store import Store

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "runs.py")


pytestmark = pytest.mark.usefixtures("fresh_app")


def run_page(**query: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table(at: AppTest):
    return at.dataframe[0].value


def test_empty_store_points_to_data_and_train(home):
    at = run_page()
    assert "Data page" in at.info[0].value and "Train page" in at.info[0].value
    assert len(at.dataframe) == 0


def test_seeded_store_lists_every_run_with_filters(seeded_home):
    _, ids = seeded_home
    at = run_page()
    assert len(table(at)) == 4
    assert {m.key for m in at.multiselect} == {
        "runs_filter_dataset",
        "runs_filter_role",
        "runs_filter_status",
    }
    assert at.selectbox(key="runs_selected").value == ids["student-soft"]  # newest first
    at.multiselect(key="runs_filter_role").set_value(["teacher"]).run()
    assert table(at)["id"].tolist() == [ids["teacher"]]
    assert at.selectbox(key="runs_selected").value == ids["teacher"]
    at.multiselect(key="runs_filter_role").set_value(["student", "baseline"]).run()
    at.multiselect(key="runs_filter_status").set_value(["failed"]).run()
    assert len(table(at)) == 0 and "No run matches" in at.caption[0].value


def test_detail_of_a_student_links_to_its_teacher(seeded_home):
    _, ids = seeded_home
    at = run_page(run=str(ids["student-soft"]))
    texts = [t.value for t in at.text]
    assert f"Teacher: #{ids['teacher']} teacher" in texts
    # What training noted is kept with the run (here: the teacher's outputs, computed once).
    captions = [c.value for c in at.caption]
    assert any("teacher's outputs on" in c and "computed once" in c for c in captions), captions
    metrics = at.dataframe[1].value
    assert {"all", "cold", "warm", "heavy"} <= set(metrics.columns)
    assert "ndcg@10" in metrics.index
    assert at.json[0].value  # the config
    at.multiselect(key="runs_filter_role").set_value(["student"]).run()
    at.button(key=f"runs_open_teacher_{ids['student-soft']}").click().run()
    assert at.selectbox(key="runs_selected").value == ids["teacher"]
    assert at.multiselect(key="runs_filter_role").value == []
    assert at.query_params["run"] == str(ids["teacher"])


def test_curves_chart_is_built_once_for_a_finished_run(seeded_home, monkeypatch):
    import pages.common as common

    _, ids = seeded_home
    built: list[int] = []
    original = common.CHARTS["training"]
    monkeypatch.setitem(
        common.CHARTS, "training", lambda frame: built.append(len(frame)) or original(frame)
    )
    at = run_page(run=str(ids["teacher"]))
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert [panel["title"] for panel in spec["hconcat"]] == ["Loss", "Validation NDCG@10"]
    at.run()  # a rerun (any click) draws the same epochs from the cached spec
    assert not at.exception and len(at.get("vega_lite_chart")) == 1
    assert len(built) == 1


def test_failed_run_shows_its_error(seeded_home):
    _, ids = seeded_home
    store = Store()
    run = store.create_run(ids["dataset"], "teacher", "sasrec", {"name": "broken"}, name="broken")
    store.set_status(run.id, "running")
    store.set_status(
        run.id, "failed", error="The loss became NaN at epoch 3; lower the learning rate."
    )
    store.close()
    at = run_page(run=str(run.id))
    assert "The loss became NaN at epoch 3" in at.error[0].value.replace("\\", "")


def test_tags_and_notes_are_saved(seeded_home):
    _, ids = seeded_home
    teacher = ids["teacher"]
    at = run_page(run=str(teacher))
    at.text_area(key=f"runs_notes_{teacher}").input("Best so far; <b>not</b> html").run()
    at.button(key=f"runs_notes_save_{teacher}").click().run()
    at.text_input(key=f"runs_tag_new_{teacher}").input("baseline-v1")
    at.button(key=f"FormSubmitter:runs_tag_form_{teacher}-Add tag").click().run()
    assert not at.exception
    store = Store()
    assert store.get_run(teacher).notes == "Best so far; <b>not</b> html"
    assert store.get_run(teacher).tags == ("baseline-v1",)
    assert "Tags: baseline-v1" in [t.value for t in at.text]
    at.selectbox(key=f"runs_tag_remove_{teacher}").set_value("baseline-v1")
    at.button(key=f"runs_tag_remove_btn_{teacher}").click().run()
    assert store.get_run(teacher).tags == ()
    store.close()


def test_delete_needs_confirmation_and_removes_files(seeded_home):
    _, ids = seeded_home
    victim = ids["student-soft"]
    folder = paths.run_dir(victim)
    assert folder.exists()
    at = run_page(run=str(victim))
    assert at.button(key=f"runs_delete_{victim}").disabled
    at.checkbox(key=f"runs_delete_confirm_{victim}").check().run()
    assert not at.button(key=f"runs_delete_{victim}").disabled
    at.button(key=f"runs_delete_{victim}").click().run()
    assert not at.exception
    store = Store()
    assert victim not in [r.id for r in store.list_runs()]
    store.close()
    assert not folder.exists()
    assert victim not in table(at)["id"].tolist() and len(table(at)) == 3


def test_renders_through_the_app_navigation(seeded_home):
    app = Path(PAGE).parent.parent / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60).run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception and [t.value for t in at.title] == ["Runs"]
    assert len(table(at)) == 4
