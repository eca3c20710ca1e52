"""AppTests of the Sweep page: the empty states, a tiny sweep queued and read back from the
store (chart, table, CSV, latency on demand), and a deleted teacher as one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.enums import PlanKind
from core.models import ModelConfig, count_parameters
from core.pipeline import RunSpec
from core.store import Store

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/sweep.py"

pytestmark = pytest.mark.usefixtures("fresh_app")


def sweep_page(timeout: float = 180) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout).switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_no_dataset_is_a_friendly_message(home):
    at = sweep_page()
    assert [t.value for t in at.title] == ["Sweep"]
    assert not errors(at)
    assert "No dataset yet" in at.info[0].value
    assert not at.button and not at.multiselect


def test_no_teacher_is_a_friendly_message(seeded_home):
    _, ids = seeded_home
    store = Store()
    store.delete_run(ids["teacher"])
    store.close()
    at = sweep_page()
    assert not errors(at)
    assert "Train a teacher on this dataset first" in at.info[0].value
    assert "No sweep on this dataset yet." in [c.value for c in at.caption]
    assert "sweep_queue" not in {b.key for b in at.button}


def test_the_form_offers_the_preset_sizes_with_widths_and_parameters(seeded_home):
    _, ids = seeded_home
    at = sweep_page()
    assert not errors(at)
    assert at.selectbox(key="sweep_teacher").value == ids["teacher"]
    sizes = at.multiselect(key=f"sweep_sizes_{ids['teacher']}")
    assert len(sizes.options) == 4 and all("width" in o and "params" in o for o in sizes.options)
    # Every preset is below this teacher; 1% and 3% of it round to one width, trained once.
    assert sizes.value == [0.01, 0.10, 0.25]
    assert [o.split(" · ")[1] for o in sizes.options[:2]] == ["width 2", "width 2"]
    assert at.selectbox(key="sweep_method").value == "soft"  # the recipe's method
    assert at.number_input(key="sweep_seeds").value == 1
    assert any("3 sizes x 1 seeds: 6 runs" in c.value for c in at.caption)
    at.number_input(key="sweep_seeds").set_value(3).run()
    assert any("3 sizes x 3 seeds: 18 runs" in c.value for c in at.caption)


def test_a_tiny_sweep_is_queued_and_its_results_are_read_from_the_store(seeded_home, monkeypatch):
    monkeypatch.setenv("DISTILLERY_SYNC_JOBS", "1")
    _, ids = seeded_home
    at = sweep_page()
    at.multiselect(key=f"sweep_sizes_{ids['teacher']}").set_value([0.01])
    at.number_input(key=f"sweep_epochs_{ids['dataset']}").set_value(1)
    at.selectbox(key="sweep_method").set_value("soft")
    assert at.checkbox(key="sweep_teacher_init").value is False  # the recipe's: opt-in
    at.checkbox(key="sweep_teacher_init").check()
    at.button(key="sweep_queue").click().run()
    assert not at.exception and not errors(at), errors(at)

    store = Store()
    (plan,) = store.list_plans(kind=PlanKind.SWEEP)
    runs = store.list_runs(plan_id=plan.id)
    store.close()
    assert [r.role for r in runs] == ["student", "baseline"]
    assert {r.status for r in runs} == {"succeeded"}, [r.error for r in runs]
    assert all(r.config["train"]["epochs"] == 1 for r in runs)
    assert runs[0].config["distill"]["method"] == "soft"
    assert runs[0].config["distill"]["teacher_init"] is True  # the student only
    assert not (runs[1].config.get("distill") or {}).get("teacher_init")
    assert at.selectbox(key="sweep_plan").value == plan.id
    assert any("2 of 2 runs ended" in p.proto.text for p in at.get("progress"))

    (table,) = [d.value for d in at.dataframe]
    assert table["size"].tolist() == ["1%"]
    assert table["seeds"].tolist() == [1]
    assert table["params"].iloc[0] == runs[0].num_params
    assert 0 < table["params %"].iloc[0] < 25
    assert table["distilled NDCG@10"].iloc[0] != "-" and table["twin NDCG@10"].iloc[0] != "-"
    (chart,) = at.get("vega_lite_chart")  # quality; no latency measured yet
    spec = json.loads(chart.proto.spec)
    assert [panel["title"] for panel in spec["hconcat"]] == ["NDCG@10", "% of teacher kept"]
    assert any("Latency not measured yet" in c.value for c in at.caption)
    (download,) = at.get("download_button")
    assert download.proto.label == "Download CSV (one row per run)"

    # Another session (a reload) reads the same sweep from the store.
    again = sweep_page()
    assert again.selectbox(key="sweep_plan").value == plan.id
    pd.testing.assert_frame_equal(again.dataframe[0].value, table)

    # Latency on demand, as Compare measures it: a second chart, and the note goes.
    again.button(key="sweep_measure").click().run()
    assert not again.exception and not errors(again), errors(again)
    assert len(again.get("vega_lite_chart")) == 2
    assert not any("Latency not measured yet" in c.value for c in again.caption)
    store = Store()
    assert all(store.latencies(r.id) for r in [*runs, store.get_run(ids["teacher"])])
    store.close()


def test_a_deleted_teacher_is_one_sentence_and_queues_nothing(seeded_home):
    _, ids = seeded_home
    at = sweep_page()
    assert at.selectbox(key="sweep_teacher").value == ids["teacher"]
    # Another tab deletes the teacher while this one still shows it.
    store = Store()
    store.delete_run(ids["teacher"])
    at.button(key="sweep_queue").click().run()
    assert not at.exception
    (message,) = errors(at)
    assert f"Teacher run #{ids['teacher']} no longer exists" in message
    assert "Nothing was queued" in message and "\n" not in message
    assert store.list_plans(kind=PlanKind.SWEEP) == []
    store.close()


def test_sizes_not_below_the_teacher_are_one_sentence_and_queue_nothing(seeded_home):
    _, ids = seeded_home
    # A teacher so small (MF, width 2) that no preset student is smaller than it.
    model = ModelConfig(family="mf", dim=2)
    store = Store()
    dataset = store.get_dataset(ids["dataset"])
    spec = RunSpec("tiny mf teacher", "teacher", model)
    tiny = store.create_run(dataset.id, "teacher", "mf", spec.to_dict(), name=spec.name)
    store.set_status(tiny.id, "running")
    store.update_run(tiny.id, num_params=count_parameters(model, dataset.n_users, dataset.n_items))
    store.set_status(tiny.id, "succeeded")
    at = sweep_page()
    assert at.selectbox(key="sweep_teacher").value == tiny.id  # the newest teacher
    sizes = at.multiselect(key=f"sweep_sizes_{tiny.id}")
    assert sizes.value == [] and all("not smaller than the teacher" in o for o in sizes.options)
    sizes.set_value([0.01])
    at.button(key="sweep_queue").click().run()
    (message,) = errors(at)
    assert "not fewer than the teacher's" in message and "Nothing was queued" in message
    assert store.list_plans(kind=PlanKind.SWEEP) == []
    store.close()
