"""The handoff in a real browser: pick the distilled student, prepare it, see the gates, and
download the bundle through the browser; the zip holds what a serving team needs.

Reuses the session's demo (conftest.py ``demo``): trained by the flow test when it ran
first, or trained here through Home's one-click demo.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import onnxruntime as ort
import pytest
from playwright.sync_api import expect

from core.serving.bundle import BUNDLE_FILES, CARD_JSON, CARD_MD
from core.serving.bundle import METRICS_JSON as METRICS_FILE
from core.serving.prepare import INT8_FILE, ITEM_MAP_FILE, ONNX_FILE
from tests.e2e.conftest import App, Demo

pytestmark = pytest.mark.e2e

PREPARE_TIMEOUT_MS = 180_000  # export, quantize, parity, onnxruntime evaluation and timing
N_GATES = 6


def _demo_student(demo: Demo) -> str:
    """``#N student-soft``: the demo's distilled student as Home listed it."""
    found = [m.group(0) for m in map(re.compile(r"^#\d+ student-soft").match, demo.labels) if m]
    assert len(found) == 1, demo.labels
    return found[0]


def test_handoff_bundle_downloads_with_every_file(app: App, demo: Demo, tmp_path: Path) -> None:
    app.goto("/handoff")
    expect(app.page.locator("h1").first).to_have_text("Handoff")
    picker = app.page.get_by_role("combobox", name="Student to hand off")
    picker.click()
    # The demo's own student, by id: the browser tests share one server, and another test
    # file (the sweep's) may have added students of the same name before this one runs.
    student = re.compile(rf"^{re.escape(_demo_student(demo))} .*\(student\)")
    app.page.get_by_role("option", name=student).click()
    expect(picker).to_have_value(student)
    app.idle()
    expect(app.page.get_by_text("Not prepared yet")).to_be_visible()
    expect(app.page.get_by_role("button", name="Download the handoff bundle (zip)")).to_have_count(
        0
    )
    app.no_traceback()
    app.shot("handoff-before")

    app.page.get_by_role("button", name="Prepare handoff").click()
    download = app.page.get_by_role("button", name="Download the handoff bundle (zip)")
    expect(download).to_be_visible(timeout=PREPARE_TIMEOUT_MS)
    app.idle()
    expect(app.page.locator("[data-testid='stAlertContentError']")).to_have_count(0)
    app.no_traceback()
    gates = app.page.locator("[data-testid='stMarkdownContainer']").filter(
        has_text=re.compile(r"\b(PASS|FAIL)\b")
    )
    expect(gates).to_have_count(N_GATES)
    verdict = app.page.get_by_text(re.compile(r"gates fail|Every gate passes"))
    expect(verdict).to_be_visible()
    expect(app.page.get_by_text("Max |score diff| vs PyTorch")).to_be_visible()
    app.shot("handoff-prepared")

    with app.page.expect_download() as info:
        download.click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.suffix == ".zip", path.name

    with zipfile.ZipFile(path) as bundle:
        assert bundle.namelist() == list(BUNDLE_FILES)
        assert set(BUNDLE_FILES) == {
            ONNX_FILE, INT8_FILE, ITEM_MAP_FILE, CARD_MD, CARD_JSON, METRICS_FILE
        }  # fmt: skip
        card = json.loads(bundle.read(CARD_JSON))
        metrics = json.loads(bundle.read(METRICS_FILE))
        markdown = bundle.read(CARD_MD).decode()
        item_map = list(csv.reader(io.StringIO(bundle.read(ITEM_MAP_FILE).decode())))
        models = {name: bundle.read(name) for name in (ONNX_FILE, INT8_FILE)}

    assert card["schema"] == "distillery.model_card/1"
    assert "student-soft" in card["run"]["title"]
    assert card["run"]["teacher_run_id"] == demo.teacher_id
    assert card["handoff"]["precision"] == "fp32"
    assert len(card["gates"]) == N_GATES
    assert metrics["run_id"] == card["run"]["id"]
    assert "student-soft" in markdown
    # One row per catalog item (plus the header) maps graph indices back to item ids.
    assert len(item_map) - 1 == card["dataset"]["n_items"]
    for name, payload in models.items():
        session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
        assert session.get_outputs(), name
