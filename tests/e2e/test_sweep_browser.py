"""The Sweep page and Compare's what-if section in a real browser, with screenshots.

Reuses the session's demo (conftest.py ``demo``): its teacher is swept at two sizes and two
seeds for one epoch (a distilled student and its twin, trained by the server's background
threads while the page polls), latency is measured on the page, and the finished sweep is
kept as tests/artifacts/screenshots/sweep.png. The what-if lists of the demo's models are
kept as whatif.png.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Locator, expect

from tests.e2e.conftest import PAGE_TIMEOUT_MS, App, Demo

pytestmark = pytest.mark.e2e

SWEEP_TIMEOUT_S = 240  # a student and its twin at the tiny demo settings, on a busy box
MEASURE_TIMEOUT_MS = 120_000  # load three models and time single requests


def drawn(chart: Locator) -> None:
    """The Vega chart has been drawn, at a readable size."""
    drawing = chart.locator("canvas, svg.marks").first
    expect(drawing).to_be_visible()
    box = drawing.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 150, box


def test_sweep_page_draws_a_finished_tiny_sweep(app: App, demo: Demo) -> None:
    app.nav("Sweep")
    teacher = app.page.get_by_role("combobox", name="Teacher run")
    expect(teacher).to_have_value(re.compile(rf"^#{demo.teacher_id} "))
    # Two sizes (the smallest and the largest offered), two seeds, one epoch: a distilled
    # student and its twin per size and seed, so the chart has lines and bands.
    tags = app.page.locator("[data-testid='stMultiSelect'] [data-tag]")
    expect(tags.first).to_contain_text("1% · width")
    while tags.count() > 2:
        tags.nth(1).get_by_role("button", name=re.compile(r"^Remove ")).click()
        app.idle()
    sizes = [t.inner_text() for t in tags.all()]
    assert len(sizes) == 2, sizes
    seeds = app.page.get_by_role("spinbutton", name="Seeds per size")
    seeds.fill("2")
    seeds.press("Enter")
    app.idle()
    epochs = app.page.get_by_role("spinbutton", name="Epochs at most")
    epochs.fill("1")
    epochs.press("Enter")
    app.idle()
    expect(
        app.page.get_by_text(f"{len(sizes)} sizes x 2 seeds: {4 * len(sizes)} runs")
    ).to_be_visible()
    app.page.get_by_role("button", name="Queue the sweep").click()
    progress = app.page.locator("[data-testid='stMain'] [data-testid='stProgress']")
    expect(progress.first).to_be_visible(timeout=PAGE_TIMEOUT_MS)

    # The page polls the plan by itself (a fragment) and redraws when each run ends.
    runs = 4 * len(sizes)
    finished = progress.filter(has_text=f"{runs} of {runs} runs ended")
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while not finished.is_visible():
        app.no_traceback()
        expect(app.page.locator("[data-testid='stAlertContentError']")).to_have_count(0)
        assert time.monotonic() < deadline, f"sweep not done in {SWEEP_TIMEOUT_S} s:\n" + (
            app.main_text()
        )
        app.page.wait_for_timeout(500)
    app.idle()
    charts = app.page.locator("[data-testid='stMain'] [data-testid='stVegaLiteChart']")
    expect(charts).to_have_count(1)  # quality; latency is measured on demand
    drawn(charts.first)
    expect(app.page.get_by_text("Latency not measured yet", exact=False)).to_be_visible()

    app.page.get_by_role("button", name="Measure latency").click()
    expect(charts).to_have_count(2, timeout=MEASURE_TIMEOUT_MS)
    app.idle()
    for chart in charts.all():
        drawn(chart)
    expect(app.page.get_by_text("Latency not measured yet", exact=False)).to_have_count(0)
    table = app.page.locator("[data-testid='stMain'] [data-testid='stDataFrame']")
    expect(table).to_have_count(1)
    expect(table.locator("td[role='gridcell']").first).to_have_text("1%")
    expect(app.page.get_by_role("button", name="Download CSV (one row per run)")).to_be_visible()
    app.no_traceback()
    app.shot("sweep")


def test_compare_whatif_lists_render(app: App, demo: Demo) -> None:
    app.goto(f"/compare?teacher={demo.teacher_id}")
    expect(app.page.get_by_text("What if: a shopping session")).to_be_visible()
    app.page.get_by_role("button", name="Start from the sample user's history").click()
    app.idle()
    # The what-if lists: a list per model with a timing caption, and none of the sample
    # lists' "test item hit/missed" notes.
    lists = (
        app.page.locator("[data-testid='stColumn']")
        .filter(has=app.page.locator("[data-testid='stDataFrame']"))
        .filter(has_text=re.compile(r"\d ms"))
        .filter(has_not_text=re.compile(r"test item (hit|missed)"))
    )
    expect(lists.first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    assert lists.count() >= 2, app.main_text()
    expect(lists.first).to_contain_text("reference")
    for column in lists.all():
        rows = column.locator("td[role='gridcell'][aria-colindex='2']")
        expect(rows.first).to_be_attached()
        assert rows.count() == 10, column.inner_text()
    app.no_traceback()
    lists.first.scroll_into_view_if_needed()
    app.shot("whatif")
