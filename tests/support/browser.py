"""One Chromium page as a context manager, for tests that drive the browser between
steps of their own (tests/support/chromium.py has the fixtures and the HTTP server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.chromium import launched
from tests.support.chromium import serving as served

__all__ = ["chromium_page", "served"]


@contextmanager
def chromium_page() -> Iterator[tuple[Any, list[str]]]:
    """(a Playwright page, the console errors and page errors it logs)."""
    with launched() as browser:
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        yield page, problems
