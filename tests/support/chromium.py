"""Headless Chromium for the page tests: Debian's, driven by Playwright (fixtures
`browser` and `tab`), and a local HTTP server showing a folder as a webserver does."""

from __future__ import annotations

import email.utils
import functools
import io
import os
import re
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


_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


class QuietHandler(SimpleHTTPRequestHandler):
    """A static file server as Apache and nginx are: it answers a single `Range` request
    with 206 and the part asked (what lets a player seek), and logs each `Range` it got."""

    timeout = 10  # an idle keep-alive or preconnect socket never holds a thread for long

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def send_head(self) -> Any:
        asked = self.headers.get("Range")
        path = self.translate_path(self.path)
        if asked is None or not os.path.isfile(path):
            return super().send_head()
        ranges: list[str] | None = getattr(self.server, "ranges", None)
        if ranges is not None:
            ranges.append(f"{self.path} {asked}")
        with open(path, "rb") as fh:
            data = fh.read()
        found = _RANGE.fullmatch(asked.strip())
        size = len(data)
        if found is None or found.groups() == ("", ""):
            return super().send_head()  # several ranges, or none: the whole file
        first, last = found.groups()
        if first:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        else:  # the last N bytes
            start, end = max(size - int(last), 0), size - 1
        if start >= size or start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        mtime = os.stat(path).st_mtime
        self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
        self.end_headers()
        return io.BytesIO(data[start : end + 1])


class _Server(ThreadingHTTPServer):
    ranges: list[str]


@contextmanager
def serving(root: Path, ranges: list[str] | None = None) -> Iterator[str]:
    """`root` over HTTP on 127.0.0.1: yields its URL, ending in "/". With `ranges`, each
    `Range` request is appended to it ("/path bytes=0-")."""
    handler = functools.partial(QuietHandler, directory=str(root))
    server = _Server(("127.0.0.1", 0), handler)
    server.ranges = [] if ranges is None else ranges
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
