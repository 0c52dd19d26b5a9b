"""A folder served over HTTP and Debian's Chromium through Playwright, for the page tests
(the same launch as tests/test_index.py's)."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.servers import require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class _QuietHandler(SimpleHTTPRequestHandler):
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """The URL (ending in "/") of `folder` served as a webserver would."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def chromium_page() -> Iterator[tuple[Any, list[str]]]:
    """(a Playwright page, the console errors and page errors it logs); a skip without
    Playwright or Chromium, a failure in CI."""
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
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            yield page, problems
        finally:
            browser.close()
