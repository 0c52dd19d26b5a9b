"""The pages are usable without a mouse and pass an automated accessibility check: axe-core
(from the npm registry, which scripts/test installs into .cache/axe) run in headless
Chromium over the day page, the search page with its results, the root page and a shared
root's page of sites, with no serious or critical finding. The check is injected with the
page's Content-Security-Policy bypassed, for the check only: the pages themselves load
under their own CSP, as in production."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from agent.publish import sites
from tests.support.chromium import serving, wait_until
from tests.support.mixmonitor import write_recording
from tests.support.servers import require
from tests.test_search import HOSTILE_SCRIPT, build, generate

AXE = Path(
    os.environ.get(
        "RECSYNC_AXE",
        Path(__file__).resolve().parent.parent / ".cache/axe/node_modules/axe-core/axe.min.js",
    )
)
BLOCKING = {"serious", "critical"}


@dataclass
class Site:
    root: Path
    url: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("www")
    build(root, generate())
    now = time.time()
    statuses = [
        sites.parse(
            folder,
            json.dumps(
                {
                    "site": folder,
                    "host": f"{folder}.example",
                    "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
                    "backlog": 2,
                    "destination": {"state": "failing", "reason": HOSTILE_SCRIPT},
                    "days": {"2024/03/15": 12, "2024/03/14": 3},
                }
            ).encode(),
            now,
        )
        for folder in ("pbx-north", "pbx-south")
    ]
    (root / "sites.html").write_bytes(sites.render(statuses, title="Calls", generated_at="now"))
    with serving(root) as url:
        yield Site(root, url)


@pytest.fixture
def checked(browser: Any) -> Iterator[Any]:
    """A page whose CSP is bypassed so the check can be injected (the pages' own scripts
    are files either way)."""
    if not AXE.is_file():
        require([str(AXE)], "axe-core", "scripts/test installs it (npm install axe-core)")
    context = browser.new_context(bypass_csp=True, viewport={"width": 1200, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


def findings(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    # content, not path: Playwright would read the file in an executor thread it keeps
    page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        """() => axe.run(document, {resultTypes: ['violations']}).then(r =>
            r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                    nodes: v.nodes.slice(0, 3).map(n => n.html)})))"""
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} {v['nodes']}"
        for v in result
        if v["impact"] in BLOCKING
    ]


def done(page: Any) -> None:
    wait_until(page, "() => document.getElementById('results').dataset.done === '1'")


@pytest.mark.parametrize(
    "path",
    [
        "index.html",
        "2024/03/15/index.html",
        "2024/03/15/index.html#",  # below: with a call linked and focused
        "search.html",
        "search.html?number=2125550142",
        "sites.html",
    ],
)
def test_no_serious_or_critical_accessibility_finding(site: Site, checked: Any, path: str) -> None:
    page = checked
    if path.endswith("#"):
        page.goto(f"{site.url}{path[:-1]}")
        uid = page.locator("#calls tbody tr[id]").nth(20).get_attribute("id")
        page.goto(f"{site.url}{path}{uid}")
        wait_until(page, "uid => document.activeElement.id === uid", uid)
    else:
        page.goto(f"{site.url}{path}")
    if "number=" in path:
        done(page)
        assert page.locator("#results tbody tr").count() > 10
    if path.startswith("2024"):
        wait_until(page, "() => !document.getElementById('speed').hidden")
    assert findings(page) == []


def test_the_search_page_works_from_the_keyboard_alone(site: Site, checked: Any) -> None:
    page = checked
    page.goto(f"{site.url}index.html")
    tabs = 0
    while page.evaluate("() => document.activeElement.getAttribute('href')") != "search.html":
        page.keyboard.press("Tab")
        tabs += 1
        assert tabs < 20, "the search link is not reachable with Tab"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site.url}search.html")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # the bar's link, then the first field
    assert page.evaluate("() => document.activeElement.id") == "q-number"
    page.keyboard.type("212 555 0142")
    page.keyboard.press("Enter")  # submits the form
    done(page)
    assert page.locator("#results tbody tr").count() > 10
    # On through the form and the speed to the first result's link and player.
    stops = []
    for _ in range(30):
        page.keyboard.press("Tab")
        stops.append(page.evaluate("() => document.activeElement.tagName"))
        if stops[-1] == "AUDIO":
            break
    assert "SELECT" in stops and stops[-1] == "AUDIO"
    src = unquote(page.evaluate("() => document.activeElement.getAttribute('src')"))
    write_recording(site.root / src, seconds=10)  # the generated calls have no audio
    page.keyboard.press(" ")
    wait_until(page, "() => !document.activeElement.paused")
    page.keyboard.press(" ")
    wait_until(page, "() => document.activeElement.paused")
    # Every form field has its label.
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select'))
                  .filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"""
    )
    assert unlabelled == []
    headers = page.locator("#results thead th").all_inner_texts()
    assert headers[:3] == ["Day", "Time", "Direction"]


def test_the_check_finds_what_it_should(checked: Any) -> None:
    """The check itself: an unlabelled field and an image without text are findings."""
    checked.set_content(
        '<!DOCTYPE html><html lang="en"><head><title>t</title></head><body><main>'
        '<input type="text"><img src="x.png"></main></body></html>'
    )
    found = findings(checked)
    assert any(" label: " in f for f in found) and any(" image-alt: " in f for f in found)
