"""Fixtures for the browser tests: one ``streamlit run`` server and one headless Chromium.

The server runs the real app (``app.py``) on a free localhost port with a fresh
``DISTILLERY_HOME`` and a tiny demo shop (``DISTILLERY_DEMO_SCALE``/``DISTILLERY_DEMO_EPOCHS``),
and with real background training threads (``DISTILLERY_SYNC_JOBS`` unset), as a user runs
it. Chromium is Debian's package driven by Playwright (``executable_path``): no browser is
ever downloaded. One browser tab (one Streamlit session) is shared by every test of the
session (of each pytest-xdist worker: scripts/test.sh runs several, each with its own server
and tab), so the demo trained by the first test that asks for it is reused by the others.
A test that needs a store of its own (a demo started from nothing) takes ``start_server``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SHOTS = ARTIFACTS / "screenshots"
# One session server per pytest-xdist worker (scripts/test.sh), each with its own log.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
SERVER_LOG = ARTIFACTS / (f"e2e-streamlit-{_WORKER}.log" if _WORKER else "e2e-streamlit.log")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
DEMO_SCALE, DEMO_EPOCHS = "0.05", "2"
SERVER_START_S = 60
PAGE_TIMEOUT_MS = 60_000  # one script run; cold imports (torch) on a busy 2-core box
DEMO_TIMEOUT_S = 180  # teacher + student + twin at the tiny demo settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log_path: Path = SERVER_LOG, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    # The server was started in its own session: its group holds streamlit and nothing else.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@dataclass(frozen=True)
class Server:
    """A running ``streamlit run app.py``: its base URL and its data directory."""

    url: str
    home: Path
    log: Path


@contextmanager
def serve(home: Path, log_path: Path, **env_overrides: str) -> Iterator[Server]:
    """Start ``streamlit run app.py`` on a free port over the data directory ``home`` (an
    empty store, the tiny demo unless ``env_overrides`` say otherwise), wait until it is
    healthy, yield it, check its log for tracebacks and stop it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update(
        DISTILLERY_HOME=str(home),
        DISTILLERY_DEMO_SCALE=DEMO_SCALE,
        DISTILLERY_DEMO_EPOCHS=DEMO_EPOCHS,
        # Tiny runs on the app's threads (a process costs more to start than they take to
        # train); the demo's reload test trains in processes, the app's default.
        DISTILLERY_EXECUTOR="thread",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_overrides)
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"streamlit not healthy after {SERVER_START_S} s:\n{_log_tail(log_path)}"
                )
            time.sleep(0.25)
        yield Server(url, home, log_path)
        # A script error that slipped past every page's check still leaves its traceback in
        # the server log (before shutdown, whose messages are not the app's).
        text = log_path.read_text(errors="replace")
        assert "Traceback" not in text and "Uncaught app" not in text, _log_tail(log_path, 80)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a fresh ``streamlit run app.py`` with an empty store and a tiny demo,
    shared by the tests of the session."""
    home = tmp_path_factory.mktemp("e2e") / "home"
    home.mkdir()
    with serve(home, SERVER_LOG) as running:
        yield running.url


@pytest.fixture
def start_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """Start servers of this test alone: ``start_server(**env)`` runs ``streamlit run app.py``
    over an empty data directory of its own (or ``home=`` an earlier server's, to restart
    over the same store), with the tiny demo unless ``env`` overrides it, and logs to
    tests/artifacts/e2e-<test>-<n>.log. Every server is stopped (and its log checked for
    tracebacks) when the test ends."""
    test = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:80]
    started: list[Server] = []
    with ExitStack() as servers:

        def start(home: Path | None = None, **env: str) -> Server:
            number = len(started) + 1
            if home is None:
                home = tmp_path / f"server-{number}-home"
                home.mkdir()
            log_path = ARTIFACTS / f"e2e-{test}-{number}.log"
            started.append(servers.enter_context(serve(home, log_path, **env)))
            return started[-1]

        yield start


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not on PATH; the browser tests need it. "
            "`bash scripts/test.sh` installs it (apt-get install chromium)."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@dataclass
class App:
    """One browser tab on the app, with the waits every step needs."""

    page: Page
    url: str
    shots: list[Path] = field(default_factory=list)

    def goto(self, path: str = "/") -> None:
        """Load a URL afresh (a new Streamlit session) and wait for the script to finish."""
        self.page.goto(self.url + path)
        self.idle()

    def nav(self, title: str, heading: str | None = None) -> None:
        """Open a page through the sidebar link (same session: session state survives)."""
        self.page.locator(f"[data-testid='stSidebarNavLink']:has(span[label='{title}'])").click()
        self.heading(heading or title)

    def heading(self, text: str) -> None:
        """Wait until the page's title is ``text`` and its script run has ended."""
        expect(self.page.locator("h1").filter(has_text=text).first).to_be_visible(
            timeout=PAGE_TIMEOUT_MS
        )
        self.idle()

    def idle(self) -> None:
        self.page.wait_for_selector(IDLE, timeout=PAGE_TIMEOUT_MS)
        # Elements of the previous run stay (marked stale) until the new run replaces them.
        expect(self.page.locator("[data-stale='true']")).to_have_count(0, timeout=PAGE_TIMEOUT_MS)
        # Dataframes and charts load their code lazily and show a skeleton until then.
        expect(self.page.locator("[data-testid='stSkeleton']")).to_have_count(
            0, timeout=PAGE_TIMEOUT_MS
        )

    def main_text(self) -> str:
        return self.page.locator("[data-testid='stMain']").inner_text()

    def no_traceback(self) -> None:
        expect(self.page.locator("[data-testid='stException']")).to_have_count(0)

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        # The app scrolls inside its main container, so a "full page" screenshot would stop
        # at the viewport: grow the viewport to the content for the shot, then restore it.
        viewport = self.page.viewport_size or {"width": 1440, "height": 1000}
        height = self.page.evaluate(
            "() => Math.max(...[...document.querySelectorAll("
            "\"[data-testid='stMain'], [data-testid='stAppViewContainer']\")]"
            ".map(e => e.scrollHeight), document.body.scrollHeight)"
        )
        self.page.set_viewport_size({"width": viewport["width"], "height": min(int(height), 8000)})
        try:
            self.page.screenshot(path=str(path), full_page=True)
        finally:
            self.page.set_viewport_size(viewport)
        self.shots.append(path)
        return path


@pytest.fixture(scope="session")
def app(server: str, browser: Browser) -> Iterator[App]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield App(page, server)
    finally:
        context.close()


@dataclass(frozen=True)
class Demo:
    """The one-click demo's runs, as the Home page reported them."""

    teacher_id: int
    labels: tuple[str, ...]  # one per run: popularity, teacher, student, twin


def _demo_labels(app: App) -> list[str]:
    panel = app.page.locator("[data-testid='stMain'] [data-testid='stText']")
    return [t.strip() for t in panel.all_inner_texts() if t.strip()]


@pytest.fixture(scope="session")
def demo(app: App) -> Demo:
    """Run Home's "Try the demo shop" in the shared tab and wait (bounded) for all four runs.

    Session-scoped, so the flow test and the handoff test share one trained demo whichever
    runs first. Screenshots of Home and Train are taken while runs are still training.
    """
    app.goto("/")
    app.page.get_by_role("button", name="Try the demo shop").click()
    progress = app.page.locator("[data-testid='stMain'] [data-testid='stProgress']")
    expect(progress.first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    app.no_traceback()
    app.shot("home-demo-running")
    # The Train page's live panel, still in the same session (sidebar link, no reload).
    app.nav("Train")
    app.no_traceback()
    app.shot("train-live-panel")
    app.nav("Home", "Distillery")
    ready = app.page.get_by_text("The demo is ready", exact=False)
    failed = app.page.get_by_text("The demo stopped before the end", exact=False)
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    while not ready.is_visible():
        # The demo's fragment polls by itself in the browser; nothing to click here.
        assert not failed.is_visible(), app.main_text()
        app.no_traceback()
        assert time.monotonic() < deadline, f"demo not finished in {DEMO_TIMEOUT_S} s:\n" + (
            app.main_text()
        )
        app.page.wait_for_timeout(500)
    app.idle()
    link = app.page.get_by_role("link", name="Open Compare")
    href = link.get_attribute("href") or ""
    match = re.search(r"teacher=(\d+)", href)
    assert match, href
    return Demo(teacher_id=int(match.group(1)), labels=tuple(_demo_labels(app)))
