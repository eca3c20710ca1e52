"""Hostile user text (titles, dataset names, notes, tags) is shown as text, never run."""

from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.ingestion.build import build_dataset
from core.ingestion.options import ColumnMapping
from core.ingestion.registry import register_dataset
from core.store import Store
from tests.apptest import ROOT

pytestmark = pytest.mark.usefixtures("fresh_app")
SCRIPT = "<script>alert(1)</script>"
FORMULA = "=cmd|' /C calc'!A0"


@pytest.fixture
def hostile_home(home):
    rows = [
        (f"u{u}", f"i{(u + t) % 6}", 1_700_000_000 + 60 * t) for u in range(8) for t in range(5)
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(6)],
            "title": [SCRIPT, FORMULA, "**bold**", "ok", "[x](javascript:alert(1))", "ok2"],
        }
    )
    data = build_dataset(
        frame,
        ColumnMapping(user="user_id", item="item_id", timestamp="timestamp"),
        catalog=catalog,
        name=f"shop {SCRIPT} **bold**",
    )
    store = Store()
    record = register_dataset(store, data, source="upload")
    run = store.create_run(record.id, "teacher", "sasrec", {"model": {}}, name=SCRIPT)
    store.add_tag(run.id, "<img src=x onerror=alert(1)>")
    store.set_notes(run.id, SCRIPT)
    return home


def markdown_texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown] + [c.value for c in at.caption]


@pytest.mark.parametrize("page", ["pages/data.py", "pages/runs.py", "pages/home.py"])
def test_hostile_text_is_never_rendered_as_markdown_or_html(hostile_home, page):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert all("<script" not in text and "onerror" not in text for text in markdown_texts(at))
    texts = [t.value for t in at.text]
    assert any(SCRIPT in t for t in texts)  # the dataset name in the sidebar, verbatim
