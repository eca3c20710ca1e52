"""No request leaves the app's own origin: shops run Distillery behind their firewall.

A fresh browser tab records every request and websocket it opens while it loads Home and
then visits every other page through the sidebar; anything addressed to another host (a
font or icon CDN, an analytics beacon) fails the test. Headless Chromium never fetches a
favicon, so the icon links the app puts in the page are checked as well: a material or
emoji page icon would point at a public CDN.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser

from tests.e2e.conftest import PAGE_TIMEOUT_MS, App

pytestmark = pytest.mark.e2e

LOCAL_SCHEMES = {"data", "blob", "about"}  # never leave the browser
OTHER_PAGES = ("Data", "Train", "Runs", "Compare", "Handoff")


def foreign(urls: list[str], origin: str) -> list[str]:
    """The URLs addressed to anything but the app's server: ``origin``'s port on this
    machine (127.0.0.1 or localhost), over http or its websocket."""
    port = urlsplit(origin).port
    own = {f"{host}:{port}" for host in ("127.0.0.1", "localhost")}
    return [
        url
        for url in urls
        if urlsplit(url).scheme not in LOCAL_SCHEMES and urlsplit(url).netloc not in own
    ]


def test_foreign_urls_are_told_apart():
    origin = "http://127.0.0.1:8501"
    urls = [
        "http://127.0.0.1:8501/static/js/index.js",
        "ws://127.0.0.1:8501/_stcore/stream",
        "data:image/png;base64,AAAA",
        "http://localhost:8501/favicon.png",
        "https://fonts.gstatic.com/s/i/short-term/release/materialsymbolsrounded/science.svg",
        "http://127.0.0.1:9000/",  # another service on this machine
    ]
    assert foreign(urls, origin) == urls[4:]


def test_every_request_stays_on_the_apps_origin(server: str, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    urls: list[str] = []
    context.on("request", lambda request: urls.append(request.url))
    page = context.new_page()
    page.on("websocket", lambda socket: urls.append(socket.url))
    try:
        app = App(page, server)
        app.goto("/")
        app.heading("Distillery")
        for title in OTHER_PAGES:
            app.nav(title)
            app.no_traceback()
        icons = page.eval_on_selector_all(
            "link[rel~='icon']", "links => links.map(link => link.href)"
        )
    finally:
        context.close()
    assert icons, "the app sets no page icon"
    assert not foreign(icons, server), icons
    assert any("/_stcore/stream" in url for url in urls), "the websocket was not recorded"
    assert len(urls) > 10, urls  # the recorder saw the page's scripts and styles
    assert not foreign(urls, server), sorted(set(foreign(urls, server)))
