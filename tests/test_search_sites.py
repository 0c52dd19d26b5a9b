"""Search over a shared root (destination.layout = "sites"): the root's search.html, written
with the root page from every site's status.json, searches each site's files under its
folder, shows each call's site, merges the sites' calls newest first, and can be narrowed
to one site (in the URL, so it can be bookmarked). An agent's own listing says its site."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import Agent
from agent.publish import search, sites
from agent.publish.index import STATIC, render_day
from agent.transport import open_transport
from agent.transport.local import LocalTransport
from tests.conftest import Site
from tests.support.chromium import Tab, serving, wait_until
from tests.test_accessibility import checked, findings  # noqa: F401 (checked: a fixture)
from tests.test_search_files import consistent
from tests.test_sites import record, sites_config

SITES = ("north", "south")
DAYS = ("2024/03/14", "2024/03/15")
HOSTILE = "<img src=x onerror=window.pwned=1>"


@dataclass
class Root:
    path: Path
    url: str
    calls: list[tuple[str, int, str, str]]  # (day, seconds, site, uniqueid)


def calls_of(folder: str, day: str) -> list[dict[str, Any]]:
    offset = SITES.index(folder) * 300  # the sites' calls interleave in time
    entries = []
    for n in range(4):
        seconds = 9 * 3600 + n * 600 + offset
        hh, mm = seconds // 3600, seconds // 60 % 60
        uid = f"17104{SITES.index(folder)}{day[-2:]}{n}.{n}"
        stamp = f"{day.replace('/', '')}-{hh:02}{mm:02}00"
        entries.append(
            {
                "file": f"{day}/in-201-2125550100-{stamp}-{uid}.wav",
                "uniqueid": uid,
                "kind": "in",
                "caller_number": "2125550100",
                "caller_name": f"{folder} caller {n}",
                "dst": "201",
                "started_at": f"{day.replace('/', '-')}T{hh:02}:{mm:02}:00+01:00",
                "billsec": 10 + n,
                "disposition": "ANSWERED",
                "site": folder,
            }
        )
    return entries


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    base = tmp_path_factory.mktemp("shared")
    calls = []
    for folder in SITES:
        for rel, content in STATIC.items():
            (base / folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / folder / rel).write_bytes(content)
        counts = []
        for day in DAYS:
            entries = calls_of(folder, day)
            part = search.DayPart(day)
            for e in entries:
                part.add(e, "201")
                calls.append((day, search._seconds_of_day(e["started_at"]), folder, e["uniqueid"]))
            (base / folder / "search" / day).parent.mkdir(parents=True, exist_ok=True)
            (base / folder / search.path_of(day)).write_bytes(part.data())
            (base / folder / day).mkdir(parents=True)
            page = render_day(day, entries, title="Calls", generated_at="now")
            (base / folder / day / "index.html").write_bytes(page)
            counts.append((day, len(entries)))
        listing = search.render_months(DAYS, site=folder)
        (base / folder / "search/months.json").write_bytes(listing)
        status = {
            "site": HOSTILE if folder == "south" else folder,
            "host": f"{folder}.example",
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "backlog": 0,
            "destination": {"state": "ok"},
            "days": dict(counts),
        }
        (base / folder / "status.json").write_text(json.dumps(status))
    assert sites.publish(LocalTransport(root=base), time.time(), title="Calls") == 2
    with serving(base) as url:
        yield Root(base, url, calls)


def shown(page: Any) -> list[tuple[str, str]]:
    wait_until(page, "() => document.getElementById('results').dataset.done === '1'")
    rows = page.eval_on_selector_all(
        "#results tbody tr",
        "rows => rows.map(r => [r.querySelector('td.day a').getAttribute('href'),"
        " r.querySelector('td.site').textContent])",
    )
    return [(str(href), str(name)) for href, name in rows]


def expected(root: Root, only: str | None = None) -> list[str]:
    calls = sorted((c for c in root.calls if only in (None, c[2])), reverse=True)
    return [f"{folder}/{day}/index.html#{uid}" for day, _, folder, uid in calls]


def test_the_root_search_finds_every_sites_calls_newest_first(root: Root, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{root.url}index.html")
    page.locator("a[href='search.html']").click()
    page.wait_for_url(f"{root.url}search.html")
    options = page.locator("#q-site option").all_inner_texts()
    assert options == ["any", "north", HOSTILE]  # the status's name, as text
    page.locator("#q-number").fill("555 0100")
    page.locator("#search button[type=submit]").click()
    found = shown(page)
    assert [href for href, _ in found] == expected(root)
    assert {name for _, name in found} == {"north", HOSTILE}
    assert page.locator("#results thead th").nth(1).inner_text() == "Site"
    src = page.locator("#results tbody tr audio").first.get_attribute("src")
    assert src is not None and src.startswith(found[0][0].split("/index.html")[0] + "/")
    page.locator(f"#results td.day a[href='{found[-1][0]}']").click()  # into its site
    page.wait_for_url(f"{root.url}{found[-1][0]}")
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert tab.problems == []


def test_a_search_narrowed_to_one_site_is_a_bookmark(root: Root, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{root.url}search.html")
    page.locator("#q-site").select_option("south")
    page.locator("#q-from").fill("2024-03-15")
    page.locator("#search button[type=submit]").click()
    found = shown(page)
    assert [href for href, _ in found] == [
        h for h in expected(root, "south") if h.startswith("south/2024/03/15/")
    ]
    assert "site=south" in page.url
    other = page.context.new_page()
    other.goto(page.url)
    assert shown(other) == found
    assert other.locator("#q-site").input_value() == "south"
    other.goto(f"{root.url}search.html?site=nowhere")  # a site not listed: nothing
    wait_until(other, "() => document.getElementById('results').dataset.done === '1'")
    assert other.locator("#found").inner_text() == "No call matches."
    assert tab.problems == []


def test_an_agents_search_files_say_its_site(site: Site, make_agent: Callable[..., Agent]) -> None:
    record(site, 2)
    config = sites_config(site)
    agent = make_agent(config, transport=open_transport(config.destination))
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    agent.publisher.heartbeat(now)
    rows = consistent(site.dest / "north", site="north")
    assert len(rows["2024/03/15"]) == 2
    page = (site.dest / "search.html").read_text()
    assert '<option value="north">north</option>' in page
    assert (site.dest / "north/search.html").is_file()  # the site's own, over its calls
    assert 'name="site"' not in (site.dest / "north/search.html").read_text()


def test_the_root_search_page_passes_the_accessibility_check(
    root: Root,
    checked: Any,  # noqa: F811 (the fixture, imported)
) -> None:
    checked.goto(f"{root.url}search.html?number=2125550100")
    wait_until(checked, "() => document.getElementById('results').dataset.done === '1'")
    assert checked.locator("#results tbody tr").count() == len(root.calls)
    assert findings(checked) == []
