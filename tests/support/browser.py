"""One Chromium page as a context manager, for tests that drive the browser between
steps of their own (tests/support/chromium.py has the fixtures and the HTTP server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.support.chromium import serving as served
from tests.support.servers import require

__all__ = ["chromium_page", "served"]


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
