"""The main user flow in a real browser: Home, the one-click demo trained by background
threads, Runs, Compare (table, Pareto chart, sample recommendations) and a bad upload.

The steps run in file order and share one tab (see conftest.py); each one checks that no
traceback is shown and keeps a full-page screenshot under tests/artifacts/screenshots/.
"""

from __future__ import annotations

import re
from functools import cache

import pytest
from playwright.sync_api import Locator, expect

from core.pipeline import load_demo_dataset
from tests.e2e.conftest import DEMO_SCALE, PAGE_TIMEOUT_MS, App, Demo

pytestmark = pytest.mark.e2e

PAGES = ("Home", "Data", "Train", "Sweep", "Runs", "Compare", "Handoff")
DEMO_RUNS = ("popularity", "teacher", "student-soft", "student-no-teacher")


@cache
def demo_titles() -> frozenset[str]:
    """Every product title of the demo shop the server built (same seed, same scale)."""
    return frozenset(str(t) for t in load_demo_dataset(scale=float(DEMO_SCALE)).titles)


def cells(frame: Locator, column: int | None = None) -> list[str]:
    """Cell texts of an st.dataframe, from the grid's accessible table (the grid itself
    is drawn on a canvas)."""
    # The accessible table is filled in once the canvas has been drawn.
    expect(frame.locator("td[role='gridcell']").first).to_be_attached()
    selector = "td[role='gridcell']" + (f"[aria-colindex='{column}']" if column else "")
    return [t.strip() for t in frame.locator(selector).all_text_contents()]


def test_home_renders_with_the_sidebar(app: App) -> None:
    app.goto("/")
    expect(app.page.locator("h1").first).to_have_text("Distillery")
    expect(app.page.get_by_text("Distill", exact=False).first).to_be_visible()
    sidebar = app.page.locator("[data-testid='stSidebar']")
    expect(sidebar).to_be_visible()
    for title in PAGES:
        expect(
            sidebar.locator(f"[data-testid='stSidebarNavLink'] span[label='{title}']")
        ).to_be_visible()
    expect(sidebar).to_contain_text("No dataset yet")
    expect(app.page.get_by_role("button", name="Try the demo shop")).to_be_enabled()
    app.no_traceback()
    app.shot("home")


def test_demo_trains_a_teacher_and_students_in_the_background(app: App, demo: Demo) -> None:
    # The demo fixture left the tab on Home after polling it to the end.
    for name in DEMO_RUNS:
        assert any(name in label for label in demo.labels), demo.labels
    bars = app.page.locator("[data-testid='stMain'] [data-testid='stProgress']")
    expect(bars).to_have_count(len(DEMO_RUNS))
    for bar in bars.all():
        expect(bar).to_contain_text("succeeded")
    expect(app.page.get_by_role("button", name="Try the demo shop")).to_be_enabled()
    sidebar = app.page.locator("[data-testid='stSidebar']")
    expect(sidebar).to_contain_text("Demo shop")
    expect(sidebar).to_contain_text("0 running · 0 queued")
    app.no_traceback()
    app.shot("home-demo-done")


def test_runs_page_lists_every_run_as_succeeded(app: App, demo: Demo) -> None:
    app.nav("Runs")
    table = app.page.locator("[data-testid='stDataFrame']").first
    expect(table).to_be_visible()
    cells(table)
    header = [t.strip() for t in table.locator("th[role='columnheader']").all_text_contents()]
    assert "status" in header, header
    status = cells(table, header.index("status") + 1)
    assert status == ["succeeded"] * len(DEMO_RUNS), status
    text = " ".join(cells(table))
    for name in DEMO_RUNS:
        assert name in text, text
    app.no_traceback()
    app.shot("runs")


def test_train_page_offers_the_finished_teacher(app: App, demo: Demo) -> None:
    app.nav("Train")
    expect(app.page.get_by_role("tab", name="Teacher")).to_be_visible()
    expect(app.page.get_by_text("Nothing is training right now.")).to_be_visible()
    app.page.get_by_role("tab", name="Student").click()
    expect(app.page.get_by_text("Student parameters")).to_be_visible()
    teacher = app.page.get_by_role("combobox", name="Teacher run")
    expect(teacher).to_have_value(re.compile(rf"^#{demo.teacher_id} teacher "))
    app.no_traceback()
    app.shot("train")


def test_compare_shows_table_pareto_chart_and_recommendations(app: App, demo: Demo) -> None:
    # A shared URL: the teacher comes from ?teacher= (what Home's "Open Compare" links to).
    app.goto(f"/compare?teacher={demo.teacher_id}")
    expect(app.page.locator("h1").first).to_have_text("Compare")
    table = app.page.locator("[data-testid='stDataFrame']").first
    expect(table).to_be_visible()
    runs = cells(table, 1)
    assert runs[0].startswith(f"#{demo.teacher_id} teacher"), runs
    for name in DEMO_RUNS:
        assert any(name in r for r in runs), runs

    # The Pareto chart needs latencies: measure them (PyTorch), as a user would.
    app.page.get_by_role("button", name="Measure latency").click()
    pareto = app.page.locator("[role='tabpanel']").filter(has_text="Pareto frontier")
    expect(pareto).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    app.idle()
    chart = pareto.locator("[data-testid='stVegaLiteChart']")
    expect(chart).to_be_visible()
    drawing = chart.locator("canvas, svg.marks").first
    expect(drawing).to_be_visible()
    box = drawing.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 150, box
    expect(app.page.get_by_text("Latency not measured yet")).to_have_count(0)

    # Sample recommendations for a random user: real product titles in every list.
    app.page.get_by_role("button", name="Random user").click()
    app.idle()
    lists = app.page.locator("[data-testid='stColumn']").filter(
        has=app.page.locator("[data-testid='stDataFrame']"),
        has_text=re.compile(r"test item (hit|missed)"),
    )
    expect(lists).to_have_count(len(DEMO_RUNS))
    expect(lists.first).to_contain_text("reference")
    catalog = demo_titles()
    for column in lists.all():
        titles = cells(column.locator("[data-testid='stDataFrame']"), 2)
        assert len(titles) == 10, titles
        assert set(titles) <= catalog, set(titles) - catalog
    app.no_traceback()
    app.shot("compare")


def test_data_page_rejects_a_bad_upload_with_one_sentence(app: App, demo: Demo) -> None:
    app.nav("Data")
    expect(app.page.get_by_text("Saved datasets")).to_be_visible()
    expect(app.page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
    app.no_traceback()
    app.shot("data")
    uploader = app.page.locator("[data-testid='stFileUploader']").first
    uploader.locator("input[type='file']").set_input_files(
        {"name": "bad.csv", "mimeType": "text/csv", "buffer": b"\x00\x01\x02garbage"}
    )
    error = app.page.locator("[data-testid='stAlertContentError']")
    expect(error).to_have_count(1, timeout=PAGE_TIMEOUT_MS)
    app.idle()
    expect(error).to_contain_text("'bad.csv' is a binary file")
    # Nothing was parsed, so no mapping form and no save button.
    expect(app.page.get_by_role("button", name="Save dataset")).to_have_count(0)
    app.no_traceback()
    app.shot("data-bad-upload")
