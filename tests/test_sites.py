"""destination.layout = "sites" on a local folder: the agent's files under its site, the
shared root page (heartbeats, the silent marker at an injected `now`, another site's
hostile status.json shown as text), rebuild and the move of a single root under a site."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import Agent
from agent.errors import AgentError
from agent.publish import sites
from agent.publish.webhook import Webhook
from agent.rebuild import rebuild
from agent.transport import as_s3, open_transport, root_path
from agent.transport.local import LocalTransport
from agent.transport.retry import RetryingTransport
from agent.transport.scoped import SiteTransport
from tests.conftest import Site
from tests.support.browser import chromium_page, served
from tests.support.crm import CrmServer
from tests.support.mixmonitor import write_recording

DAY = "2024/03/15"
NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC).timestamp()
HOSTILE_IMG = '<img src=x onerror="window.pwned=1">'
HOSTILE_SCRIPT = "<script>window.pwned=2</script>"


def record(site: Site, count: int, seed: int = 0) -> list[str]:
    rels = [
        f"{DAY}/out-18005551234-1001-20240315-1015{n:02d}-1710497702.{n}.wav" for n in range(count)
    ]
    for n, rel in enumerate(rels):
        write_recording(site.spool_file(rel), seconds=1, seed=seed + n)
    return rels


def sites_config(site: Site, name: str = "north", layout: str = "sites", **extra: Any) -> Any:
    return site.config(
        agent={"site": name},
        spool={"backfill_days": 100_000},
        destination={"type": "local", "root": str(site.dest), "layout": layout},
        index={"enabled": True},
        **extra,
    )


def ship(make_agent: Callable[..., Agent], config: Any, now: float = NOW) -> Agent:
    """One pass at `now` (the root page's clock), everything settled long before."""
    agent = make_agent(config, transport=open_transport(config.destination))
    agent.start(now)
    agent.run_once(now)
    agent.publisher.heartbeat(now)
    return agent


def status_of(generated: float, **fields: object) -> bytes:
    iso = datetime.fromtimestamp(generated, UTC).isoformat()
    document = {"generated_at": iso, "backlog": 0, "destination": {"state": "ok"}} | fields
    return json.dumps(document).encode()


def done(agent: Agent) -> int:
    return int(
        agent.store.conn.execute("SELECT count(*) FROM recordings WHERE state = 'done'").fetchone()[
            0
        ]
    )


def plant(root: Path, remote: str, data: bytes) -> None:
    (root / remote).parent.mkdir(parents=True, exist_ok=True)
    (root / remote).write_bytes(data)


def test_the_agent_owns_its_site_folder_and_the_manifests_say_so(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    rels = record(site, 3)
    ship(make_agent, sites_config(site))
    assert sorted(p.name for p in site.dest.iterdir()) == [
        "index.html",
        "north",
        "search.html",
        "static",
    ]
    north = site.dest / "north"
    assert len(list((north / DAY).glob("*.wav"))) == 3
    manifest = json.loads((north / DAY / "manifest.json").read_text())
    assert sorted(e["original"] for e in manifest["recordings"]) == sorted(rels)
    assert {e["site"] for e in manifest["recordings"]} == {"north"}
    assert all(e["file"].startswith(f"{DAY}/") for e in manifest["recordings"])  # site-relative
    status = json.loads((north / "status.json").read_text())
    assert (status["site"], status["days"]) == ("north", {DAY: 3})
    assert (north / "index.html").exists() and (north / "static" / "recsync.css").exists()
    assert b"north" in (site.dest / "index.html").read_bytes()


def test_single_layout_keeps_the_root_and_says_no_site(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    record(site, 2)
    ship(make_agent, sites_config(site, layout="single"))
    assert sorted(p.name for p in site.dest.iterdir()) == [
        "2024",
        "index.html",
        "search",
        "search.html",
        "static",
        "status.json",
    ]
    manifest = json.loads((site.dest / DAY / "manifest.json").read_text())
    assert all("site" not in e for e in manifest["recordings"])
    assert "site" not in json.loads((site.dest / "status.json").read_text())


def test_a_heartbeat_older_than_ten_minutes_is_silent(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    now = float(int(time.time()))  # the browser's clock must agree (the page's script)
    plant(site.dest, "south/status.json", status_of(now - 601, site="south", host="pbx-s"))
    plant(site.dest, "east/status.json", status_of(now - 300, site="east", host="pbx-e"))
    listed = {s.folder: s for s in sites.collect(LocalTransport(root=site.dest), now - 299)}
    assert listed["east"].silent is False and listed["east"].age == "1 s ago"
    listed = {s.folder: s for s in sites.collect(LocalTransport(root=site.dest), now + 301)}
    assert listed["east"].silent is True  # 601 s at that now
    record(site, 1)
    ship(make_agent, sites_config(site), now)
    listed = {s.folder: s for s in sites.collect(LocalTransport(root=site.dest), now)}
    assert {name: s.silent for name, s in listed.items()} == {
        "east": False,
        "north": False,
        "south": True,
    }
    with served(site.dest) as url, chromium_page() as (page, problems):
        page.goto(url)
        rows = page.locator("#sites tbody tr")
        assert rows.count() == 3
        silent = page.locator("#sites tr.silent .name a").all_inner_texts()
        assert silent == ["south"]
        assert (
            page.locator("#sites tr", has_text="south").locator(".badge").inner_text() == "silent"
        )
        assert "1 silent" in page.locator(".summary").inner_text()
        page.locator("#per-day a", has_text="1").click()  # north's one call that day
        page.wait_for_url(f"{url}north/{DAY}/index.html")
        assert page.locator("#calls tbody tr").count() == 1
        assert problems == []


def test_another_sites_hostile_status_is_text(site: Site, make_agent: Callable[..., Agent]) -> None:
    hostile = status_of(
        NOW,
        site=HOSTILE_IMG,
        host=HOSTILE_SCRIPT,
        backlog="<i>many</i>",
        destination={"state": "<b>ok</b>", "reason": HOSTILE_IMG},
        days={DAY: 2, "../../../etc": 5, HOSTILE_SCRIPT: 1, "2024/03/14": "<b>"},
    )
    plant(site.dest, "evil/status.json", hostile)
    plant(site.dest, f"{HOSTILE_IMG}/status.json", status_of(NOW, site="folder"))  # no site name
    plant(site.dest, "broken/status.json", b"\xff not json {")
    record(site, 1)
    ship(make_agent, sites_config(site))
    page_bytes = (site.dest / "index.html").read_bytes()
    assert b"<img" not in page_bytes and b"<script>" not in page_bytes
    assert b'class="site" data-folder="evil"' in page_bytes  # not silent at the page's now
    with served(site.dest) as url, chromium_page() as (page, problems):
        page.goto(url)
        assert page.evaluate("() => window.pwned === undefined")
        evil = page.locator("#sites tr[data-folder=evil]")
        # Years old by the browser's clock: the script marks it (nobody rewrote the page).
        page.wait_for_function("() => document.querySelector('tr[data-folder=evil].silent')")
        assert evil.locator(".badge").inner_text() == "silent"
        assert evil.locator(".name a").inner_text() == HOSTILE_IMG
        assert evil.locator(".host").inner_text() == HOSTILE_SCRIPT
        assert evil.locator(".backlog").inner_text() == "unknown"
        assert evil.locator(".reason").inner_text() == HOSTILE_IMG
        assert page.locator("#sites tbody tr").count() == 3  # evil, broken, north
        broken = page.locator("#sites tr[data-folder=broken]")
        assert "silent" in (broken.get_attribute("class") or "")
        links = page.locator("#per-day a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        assert sorted(links) == [f"evil/{DAY}/index.html", f"north/{DAY}/index.html"]
        assert problems == []


def test_rebuild_under_a_site_ships_nothing_again(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    record(site, 3)
    config = sites_config(site)
    ship(make_agent, config).close()
    before = {p: p.stat().st_mtime_ns for p in (site.dest / "north").rglob("*.wav")}
    transport = open_transport(config.destination)
    report = rebuild(config, transport, force=True, now=NOW)
    transport.close()
    assert (report.days, report.restored, report.in_spool) == (1, 3, 3)
    agent = ship(make_agent, config, NOW + 60)
    assert done(agent) == 3
    assert {p: p.stat().st_mtime_ns for p in (site.dest / "north").rglob("*.wav")} == before


def test_a_single_root_moved_under_a_site_is_not_shipped_again(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    """README's move: rename the root's files into <root>/<site>/, set layout = "sites",
    then `recsync state rebuild --force`; the agent then ships only what is new."""
    record(site, 2)
    ship(make_agent, sites_config(site, layout="single")).close()
    (site.dest / "north").mkdir()
    for child in list(site.dest.iterdir()):
        if child.name not in ("north", "index.html"):
            shutil.move(child, site.dest / "north" / child.name)
    config = sites_config(site)
    transport = open_transport(config.destination)
    assert rebuild(config, transport, force=True, now=NOW).restored == 2
    transport.close()
    write_recording(
        site.spool_file(f"{DAY}/in-1001-18005551234-20240315-101600-1710497760.9.wav"),
        seconds=1,
        seed=9,
    )
    agent = ship(make_agent, config, NOW + 60)
    assert done(agent) == 3
    assert len(list((site.dest / "north" / DAY).glob("*.wav"))) == 3
    assert not (site.dest / "2024").exists()
    manifest = json.loads((site.dest / "north" / DAY / "manifest.json").read_text())
    assert len(manifest["recordings"]) == 3 and {e["site"] for e in manifest["recordings"]} == {
        "north"
    }


def test_a_root_owned_by_a_single_layout_agent_is_refused(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    plant(site.dest, "status.json", status_of(NOW, host="pbx-alone"))
    record(site, 1)
    config = sites_config(site)
    agent = make_agent(config, transport=open_transport(config.destination))
    with pytest.raises(AgentError, match="belongs to one agent alone"):
        agent.start(NOW)
    assert sorted(p.name for p in site.dest.iterdir()) == ["status.json"]


def test_webhooks_say_which_site(
    site: Site, crm: CrmServer, make_agent: Callable[..., Agent]
) -> None:
    record(site, 2)
    config = sites_config(site)
    agent = make_agent(
        config,
        transport=open_transport(config.destination),
        webhook=Webhook(url=f"{crm.base}/hooks", secret=None, timeout=2),
    )
    agent.run_until_idle()
    sent = [json.loads(r.body)["recording"] for r in crm.wait_for(2)]
    assert [e["site"] for e in sent] == ["north", "north"]
    assert all(e["file"].startswith(f"{DAY}/") for e in sent)


def test_paths_under_a_site_are_signed_as_the_root_names_them(site: Site) -> None:
    wrapped = SiteTransport(RetryingTransport(LocalTransport(root=site.dest)), site="north")
    assert root_path(wrapped, f"{DAY}/x.wav") == f"north/{DAY}/x.wav"
    assert root_path(LocalTransport(root=site.dest), f"{DAY}/x.wav") == f"{DAY}/x.wav"
    assert as_s3(wrapped) is None


def test_a_single_layout_agent_refuses_a_root_of_sites(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    plant(site.dest, "south/status.json", status_of(NOW, site="south", host="pbx-s"))
    plant(site.dest, "index.html", b"the sites' page")
    record(site, 1)
    config = sites_config(site, layout="single")
    agent = make_agent(config, transport=open_transport(config.destination))
    with pytest.raises(AgentError, match="shared by several sites"):
        agent.start(NOW)
    assert sorted(p.name for p in site.dest.iterdir()) == ["index.html", "south"]
