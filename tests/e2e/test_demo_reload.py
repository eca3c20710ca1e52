"""The one-click demo lives in the store, not in a browser tab: a reload right after "Try the
demo shop", a second tab of the same browser and another browser session all show the one
demo in progress, each tab's polling panel follows it to the end, and the students were
queued by the server when their teacher succeeded (no page queued anything). A reload while
the demo shop is still being built (the click's script run is stopped) still queues it.

Each test starts a server of its own (an empty store). The first sizes the demo so that the
teacher trains for some seconds after the click (the reload lands while it trains) and the
whole demo ends in about a quarter of a minute on two idle cores.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from core import paths, plans, settings
from core.enums import PlanKind, Role, Status
from core.store import Store
from tests.e2e.conftest import PAGE_TIMEOUT_MS, App, Server

pytestmark = pytest.mark.e2e

# Measured on two idle cores: the teacher trains ~8 s, the student and its twin ~5 s more.
# The app's own executor: every trained run of the demo in a process of its own.
DEMO_ENV = {
    settings.DEMO_SCALE_ENV: "0.1",
    settings.DEMO_EPOCHS_ENV: "4",
    settings.EXECUTOR_ENV: "process",
}
DEMO_ROLES = [Role.POPULARITY, Role.TEACHER, Role.STUDENT, Role.BASELINE]
# The full-size shop takes over a second to build (the spinner shows after half a second);
# its one-epoch teacher is still training when the test ends.
BUILD_ENV = {settings.DEMO_SCALE_ENV: "1.0", settings.DEMO_EPOCHS_ENV: "1"}
DONE_TIMEOUT_MS = 180_000  # the demo ends in ~15 s on idle cores; far more on busy ones
WAITING = "waiting for the teacher"
STARTING = "The students start as soon as the teacher has finished."
READY = "The demo is ready"
STOPPED = "The demo stopped before the end"


@pytest.fixture
def new_tab(browser: Browser) -> Iterator[Callable[[str], App]]:
    """``new_tab(url)``: a tab in a new browser context (its own cookies, so its own
    Streamlit session); every context is closed after the test."""
    contexts: list[BrowserContext] = []

    def open_tab(url: str) -> App:
        contexts.append(browser.new_context(viewport={"width": 1440, "height": 1000}))
        contexts[-1].set_default_timeout(PAGE_TIMEOUT_MS)
        return App(contexts[-1].new_page(), url)

    try:
        yield open_tab
    finally:
        for context in contexts:
            context.close()


def bars(page: Page):
    return page.locator("[data-testid='stMain'] [data-testid='stProgress']")


def expect_demo_in_progress(app: App) -> None:
    """Home shows the running demo: its four runs with progress bars, the note that the
    students follow the teacher, and the start button disabled (not offered again)."""
    main = app.page.locator("[data-testid='stMain']")
    expect(bars(app.page)).to_have_count(len(DEMO_ROLES))
    expect(main.get_by_text(STARTING)).to_be_visible()
    expect(app.page.get_by_role("button", name="Try the demo shop")).to_be_disabled()
    expect(main.get_by_text(READY)).to_have_count(0)
    labels = main.locator("[data-testid='stText']").all_inner_texts()
    for name in ("popularity", "teacher", "student-soft", "student-no-teacher"):
        assert any(name in label for label in labels), labels
    app.no_traceback()


def expect_demo_finished(app: App, teacher_id: int) -> None:
    """Wait for the tab's polling panel to show the end of the demo, then check it."""
    main = app.page.locator("[data-testid='stMain']")
    end = main.get_by_text(re.compile(f"{READY}|{STOPPED}"))
    expect(end.first).to_be_visible(timeout=DONE_TIMEOUT_MS)
    app.idle()
    expect(main.get_by_text(STOPPED)).to_have_count(0)
    expect(bars(app.page)).to_have_count(len(DEMO_ROLES))
    for bar in bars(app.page).all():
        expect(bar).to_contain_text("succeeded")
    link = app.page.get_by_role("link", name="Open Compare")
    expect(link).to_have_attribute("href", re.compile(rf"[?&]teacher={teacher_id}\b"))
    expect(app.page.get_by_role("button", name="Try the demo shop")).to_be_enabled()
    app.no_traceback()


def open_store(server: Server, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The server's own store (its DISTILLERY_HOME, default SQLite file), read here."""
    monkeypatch.setenv(settings.HOME_ENV, str(server.home))
    monkeypatch.delenv(settings.DB_URL_ENV, raising=False)
    assert paths.default_db_path().exists()
    return Store(migrate=False)


def wait_for_demo_plan(store: Store) -> plans.PlanView:
    """The demo plan, once the server has queued it (polled in the store)."""
    deadline = time.monotonic() + DONE_TIMEOUT_MS / 1000
    while (demo := plans.latest(store, PlanKind.DEMO)) is None:
        assert time.monotonic() < deadline, "the server never queued the demo"
        time.sleep(0.25)
    return demo


def test_the_demo_survives_a_reload_and_shows_in_every_tab(
    start_server: Callable[..., Server],
    new_tab: Callable[[str], App],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = start_server(**DEMO_ENV)
    first = new_tab(server.url)
    first.goto("/")
    first.heading("Distillery")
    first.page.get_by_role("button", name="Try the demo shop").click()
    # Reload as soon as the demo is queued (its progress bars show), while the teacher trains.
    expect(bars(first.page).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    first.page.reload()
    first.heading("Distillery")
    expect_demo_in_progress(first)
    # The reload landed while the teacher trained: its students still wait for it.
    teacher_bar, *student_bars = bars(first.page).all()[1:]
    expect(teacher_bar).not_to_contain_text("succeeded")
    for bar in student_bars:
        expect(bar).to_contain_text(WAITING)
    first.shot("home-demo-after-reload")

    # A second tab of the same browser, and a tab of another browser session.
    second = App(first.page.context.new_page(), server.url)
    second.goto("/")
    second.heading("Distillery")
    expect_demo_in_progress(second)
    other_session = new_tab(server.url)
    other_session.goto("/")
    other_session.heading("Distillery")
    expect_demo_in_progress(other_session)
    other_session.shot("home-demo-other-session")

    with open_store(server, monkeypatch) as store:
        demos = store.list_plans(kind=PlanKind.DEMO)
        assert len(demos) == 1, demos  # three sessions, one demo
        teacher = plans.view(store, demos[0].id).teacher
        assert teacher is not None

        # Every tab's polling panel follows the demo to its end, by itself.
        for app in (first, second, other_session):
            expect_demo_finished(app, teacher.id)
        other_session.shot("home-demo-done-other-session")

        # The students were recorded (waiting) with the plan before their teacher ended and
        # were released by the store when it succeeded: no page queued anything.
        demo = plans.view(store, demos[0].id)
        assert (demo.status, [r.role for r in demo.runs]) == ("succeeded", DEMO_ROLES)
        assert {r.status for r in demo.runs} == {Status.SUCCEEDED}
        assert len(store.list_runs()) == len(DEMO_ROLES)
        teacher = demo.teacher
        for student in demo.runs[2:]:
            assert (student.depends_on_run_id, student.teacher_run_id) == (teacher.id,) * 2
            assert student.created < teacher.finished <= student.started


def test_a_reload_while_the_demo_shop_is_built_still_queues_the_demo(
    start_server: Callable[..., Server],
    new_tab: Callable[[str], App],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's "Building the demo shop..." spinner is up, the tab reloads: Streamlit stops
    that script run at its next st.* call, and the demo must be queued all the same."""
    server = start_server(**BUILD_ENV)
    app = new_tab(server.url)
    app.goto("/")
    app.heading("Distillery")
    app.page.get_by_role("button", name="Try the demo shop").click()
    spinner = app.page.locator("[data-testid='stMain'] [data-testid='stSpinner']")
    expect(spinner).to_contain_text("Building the demo shop", timeout=PAGE_TIMEOUT_MS)
    app.page.reload()
    with open_store(server, monkeypatch) as store:
        demo = wait_for_demo_plan(store)
        assert [r.role for r in demo.runs] == DEMO_ROLES
        assert len(store.list_datasets()) == 1 and len(store.list_runs()) == len(DEMO_ROLES)
    # A tab that rendered before the plan existed learns of it on its next run.
    app.page.reload()
    app.heading("Distillery")
    expect_demo_in_progress(app)
