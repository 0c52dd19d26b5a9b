"""Headless Chromium for the page tests: Debian's, driven by Playwright (fixtures
`browser` and `tab`), and a local HTTP server showing a folder as a webserver does."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # DESIGN.md "Testing on this machine" (Playwright adds --headless)
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class QuietHandler(SimpleHTTPRequestHandler):
    timeout = 10  # an idle keep-alive or preconnect socket never holds a thread for long

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(root: Path) -> Iterator[str]:
    """`root` over HTTP on 127.0.0.1: yields its URL, ending in "/"."""
    handler = functools.partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright: a skip without it, a failure in CI."""
    with launched() as running:
        yield running


@contextmanager
def launched() -> Iterator[Any]:
    """A Playwright Browser on Debian's Chromium; a skip without it, a failure in CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(["playwright"], "Playwright", "pip install -e '.[test]'")
        raise
    if not os.access(CHROMIUM, os.X_OK):
        require([CHROMIUM], "Chromium", "Debian package chromium; scripts/test installs it as root")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    page: Any  # playwright.sync_api.Page
    problems: list[str]  # console errors and uncaught page errors


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1200, "height": 700})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    try:
        yield Tab(page, problems)
    finally:
        context.close()


def wait_until(page: Any, script: str, arg: object = None) -> None:
    page.wait_for_function(script, arg=arg, timeout=10_000)
