"""AppTests of app.py (navigation, sidebar) and the Home page's one-click demo."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import recipe
from core.store import Store
from core.views import forms

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = (
    "pages/home.py",
    "pages/data.py",
    "pages/train.py",
    "pages/sweep.py",
    "pages/runs.py",
    "pages/compare.py",
    "pages/handoff.py",
)


pytestmark = pytest.mark.usefixtures("fresh_app")


def app(page: str | None = None, timeout: float = 30) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    if page:
        at.switch_page(page)
    return at.run()


def sidebar_text(at: AppTest) -> list[str]:
    return [e.value for e in at.sidebar.caption] + [e.value for e in at.sidebar.text]


def test_home_renders_on_an_empty_store(home):
    at = app()
    assert not at.exception
    assert at.title[0].value == "Distillery"
    assert len(at.button) == 1 and at.button[0].label == "Try the demo shop"
    assert at.toggle(key="home_demo_full").value is False
    assert "No dataset yet" in sidebar_text(at)[0]
    assert "Runs: 0 running · 0 queued · 0 waiting" in sidebar_text(at)
    # reruns keep the sidebar (app.py runs every time)
    at.run()
    assert "Runs: 0 running · 0 queued · 0 waiting" in sidebar_text(at)


def test_the_page_icon_is_a_local_png_served_by_the_app(home, monkeypatch):
    import streamlit as st

    calls: list[dict] = []
    original = st.set_page_config
    monkeypatch.setattr(st, "set_page_config", lambda **kw: calls.append(kw) or original(**kw))
    at = app()
    assert not at.exception
    (config,) = calls
    icon = Path(config["page_icon"])
    # A material or emoji icon would make the browser fetch the favicon from a public CDN.
    assert not str(icon).startswith(":")
    assert ROOT in icon.parents and icon.is_file()
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_product_config_keeps_the_server_light_while_training():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    # A full gc.collect() after every poll of a live panel stalls the training threads.
    assert config["runner"]["postScriptGC"] is False
    # A watcher of the app's folder would see every write of the store and checkpoints.
    assert config["server"]["fileWatcherType"] == "none"


def test_chart_specs_are_built_once_per_distinct_frame(monkeypatch):
    import pages.common as common

    built: list[int] = []
    original = common.CHARTS["timeline"]
    monkeypatch.setitem(
        common.CHARTS, "timeline", lambda frame: built.append(len(frame)) or original(frame)
    )
    common.chart_spec.clear()
    days = pd.to_datetime(["2024-01-01", "2024-01-02"])
    frame = pd.DataFrame({"period": days, "interactions": [3, 4]})
    first = common.chart_spec("timeline", frame)
    assert common.chart_spec("timeline", frame.copy()) == first  # an equal frame: cached
    assert built == [2]
    common.chart_spec("timeline", frame.iloc[:1])
    assert built == [2, 1]
    assert first["encoding"]["y"]["field"] == "interactions"  # a plain Vega-Lite dict


def test_sidebar_shows_the_active_dataset(seeded_home):
    root, ids = seeded_home
    record = Store().get_dataset(ids["dataset"])
    at = app()
    assert not at.exception
    texts = sidebar_text(at)
    assert record.name in texts
    assert f"{record.n_users:,} users · {record.n_items:,} items" in texts
    assert "Runs: 0 running · 0 queued · 0 waiting" in texts


@pytest.mark.parametrize("page", PAGES)
def test_every_listed_page_routes_and_renders_with_a_seeded_store(seeded_home, page):
    at = app(page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title or at.header, f"{page} rendered nothing"
    assert any(t.startswith("Runs:") for t in sidebar_text(at))


def test_home_demo_runs_to_the_end_with_a_synchronous_runner(home, monkeypatch):
    monkeypatch.setenv("DISTILLERY_SYNC_JOBS", "1")
    monkeypatch.setenv("DISTILLERY_DEMO_SCALE", "0.05")
    monkeypatch.setenv("DISTILLERY_DEMO_EPOCHS", "1")
    at = app(timeout=180)
    at.button(key="home_demo_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    store = Store()
    (dataset,) = store.list_datasets()
    assert dataset.name == "Demo shop x0.05"
    runs = {r.role: r for r in store.list_runs()}
    assert set(runs) == {"popularity", "teacher", "student", "baseline"}
    assert all(r.status == "succeeded" for r in runs.values()), [r.error for r in runs.values()]
    teacher = runs["teacher"]
    assert runs["student"].teacher_run_id == teacher.id
    assert runs["baseline"].teacher_run_id == teacher.id
    assert runs["student"].config["distill"]["method"] == "soft"
    # DISTILLERY_DEMO_EPOCHS caps the presets
    assert all(r.config["train"]["epochs"] == 1 for r in runs.values())
    # The dataset's live recipe, as `python -m core run` uses it.
    live = recipe.live(forms.presets(dataset))
    expected = forms.demo_plan(None, live).teacher.to_dict()["model"]
    assert runs["teacher"].config["model"] == expected
    assert {r.plan_id for r in runs.values()} == {store.list_plans()[0].id}

    assert "The demo is ready" in at.success[0].value
    assert len(at.progress) == 4 and all(p.value == 100 for p in at.progress)
    links = [link.proto.label for link in at.get("page_link")]
    assert "Open Compare" in links
    assert at.button(key="home_demo_start").disabled is False
    assert dataset.name in sidebar_text(at)
    # A new session (another tab, a reload) reads the same demo from the store.
    other = app(timeout=60)
    assert "The demo is ready" in other.success[0].value and len(other.progress) == 4


def test_demo_plan_uses_the_presets_and_caps_epochs():
    full = forms.demo_plan()
    assert full.teacher.role == "teacher" and full.popularity.role == "popularity"
    assert [s.role for s in full.students] == ["student", "baseline"]
    assert full.students[0].distill.method == "soft"
    assert full.students[0].model == full.students[1].model
    capped = forms.demo_plan(3)
    assert capped.teacher.train.epochs == min(full.teacher.train.epochs, 3)
    assert capped.teacher.model == full.teacher.model
    # The one-click demo: the recipe's models, a fixed short training (no early stop).
    demo = forms.demo_plan(None, recipe.live(forms.presets(None)))
    lighter = min(full.teacher.model.dropout, recipe.LIVE_MAX_DROPOUT)
    assert demo.teacher.model == replace(full.teacher.model, dropout=lighter)
    assert demo.students[0].model.dim == full.students[0].model.dim
    assert demo.students[0].model == demo.students[1].model  # the twin is the same student
    assert demo.teacher.train.lr == pytest.approx(recipe.LIVE_LR_FACTOR * full.teacher.train.lr)
    assert demo.teacher.train.lr_schedule == "linear"
    assert demo.teacher.train.epochs == demo.teacher.train.min_epochs == min(
        full.teacher.train.epochs, recipe.LIVE_TEACHER_EPOCHS
    )
    assert demo.students[1].train.epochs == demo.students[1].train.min_epochs == min(
        full.students[1].train.epochs, recipe.LIVE_STUDENT_EPOCHS
    )
