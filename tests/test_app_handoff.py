"""AppTest of the Handoff page: empty and seeded stores, ?run= preselection, preparing a
handoff (gates, tables, the download button and no zip before it is clicked), editable
thresholds, and app.py routing."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import paths
from core.store import Store
from tests import apptest

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "handoff.py")
APP = str(ROOT / "app.py")


pytestmark = pytest.mark.usefixtures("fresh_app")
PASS, FAIL = ":green[:material/check_circle: **PASS**]", ":red[:material/cancel: **FAIL**]"


def run_page(**query: str) -> AppTest:
    return apptest.run_page("handoff", 60, **query)


def gate_lines(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith((PASS, FAIL))]


def test_empty_store_says_what_is_needed(home):
    at = run_page()
    assert "train a student" in at.info[0].value
    assert len(at.selectbox) == 0 and len(at.button) == 0


def test_query_param_preselects_and_bad_values_are_ignored(seeded_home):
    _, ids = seeded_home
    at = run_page(run=str(ids["student-no-teacher"]))
    assert at.selectbox(key="handoff_run").value == ids["student-no-teacher"]
    assert "Not prepared yet" in at.info[0].value
    assert len(at.get("download_button")) == 0
    at = run_page(run="999,x")
    newest = max(ids["student-soft"], ids["student-no-teacher"])
    assert at.selectbox(key="handoff_run").value == newest
    assert at.query_params["run"] == str(newest)
    assert set(at.selectbox(key="handoff_run").options) == {
        f"#{ids['student-soft']} student-soft (student)",
        f"#{ids['student-no-teacher']} student-no-teacher (baseline)",
    }


def test_prepare_shows_checks_gates_and_the_bundle(seeded_home):
    _, ids = seeded_home
    run_id = ids["student-soft"]
    at = run_page(run=str(run_id))
    at.button(key="handoff_prepare").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    lines = gate_lines(at)
    assert len(lines) == 6
    with Store() as store:
        latencies = store.latencies(run_id)
        parity = store.parities(run_id)[-1]
    assert len(latencies) == 6
    latency_table, quality_table = at.dataframe[0].value, at.dataframe[1].value
    assert len(latency_table) == 7  # 3 runtimes x 2 batches, and the teacher
    assert sorted(latency_table["p50_ms"].iloc[:6]) == sorted(r.p50 for r in latencies)
    assert quality_table["row"].tolist()[:3] == ["this run"] * 3
    assert at.metric[0].value == f"{parity.max_abs_diff:.2e}"
    buttons = at.get("download_button")
    assert len(buttons) == 1 and "bundle" in buttons[0].label
    # The zip is built when the button is clicked, never by a rerun.
    assert not list(paths.bundles_dir().glob("*.zip"))
    assert any("Model card" in e.label for e in at.expander)

    # A threshold below the measured p95 fails that gate, and only the warning changes.
    p95_line = next(line for line in lines if "p95 latency" in line)
    assert p95_line.startswith(PASS)
    at.number_input(key="handoff_max_p95").set_value(0.001).run()
    assert not at.exception
    assert next(line for line in gate_lines(at) if "p95 latency" in line).startswith(FAIL)
    at.checkbox(key="handoff_beat_twin").uncheck().run()
    assert len(gate_lines(at)) == 5

    # int8 is judged on its own file and runtime; a fresh session reads the stored checks.
    at.radio(key="handoff_artifact").set_value("int8").run()
    assert not at.exception
    assert any("model.int8.onnx is" in line for line in gate_lines(at))
    st.cache_resource.clear()
    again = run_page(run=str(run_id))
    assert len(gate_lines(again)) == 6 and len(again.get("download_button")) == 1


def test_app_routes_to_the_handoff_page(home):
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/handoff.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Handoff"
