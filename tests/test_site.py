"""Publishing the pages beside the recordings: incremental, from the state database."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from agent.daemon import Agent
from tests.conftest import Site
from tests.support.mixmonitor import write_recording


def name(day: int, n: int) -> str:
    return f"2024/03/{day}/in-600-21255501{n:02d}-202403{day}-1015{n:02d}-1710497702.{day}{n}.wav"


def mtimes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
    }


def test_pages_manifests_and_static_files_are_published(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    for rel in (name(14, 1), name(15, 1), name(15, 2)):
        write_recording(site.spool_file(rel))
    make_agent(
        site.config(
            spool={"backfill_days": 100_000}, index={"enabled": True, "title": "ACME calls"}
        )
    ).run_until_idle()
    for page in (
        "index.html",
        "2024/03/14/index.html",
        "2024/03/15/index.html",
        "static/recsync.css",
        "static/recsync.js",
    ):
        assert (site.dest / page).is_file(), page
    root = (site.dest / "index.html").read_text()
    assert "ACME calls" in root
    assert root.index("2024/03/15/index.html") < root.index("2024/03/14/index.html")  # newest first
    day = (site.dest / "2024/03/15/index.html").read_text()
    assert day.count('preload="none"') == 2


def test_a_new_recording_rewrites_only_its_day_and_the_root(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    for rel in (name(14, 1), name(15, 1)):
        write_recording(site.spool_file(rel))
    config = site.config(spool={"backfill_days": 100_000}, index={"enabled": True})
    agent = make_agent(config)
    agent.run_until_idle()
    past = time.time() - 3600  # so that a rewrite, however quick, shows in the mtimes
    for path in site.dest.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))
    before = mtimes(site.dest)

    write_recording(site.spool_file(name(15, 2)))
    agent.pipeline.observe(name(15, 2), time.time())
    agent.run_once(time.time())
    after = mtimes(site.dest)
    changed = sorted(p for p in after if after[p] != before.get(p))
    assert [p for p in changed if not p.endswith(".wav")] == [
        "2024/03/15/index.html",
        "2024/03/15/manifest.json",
        "index.html",
        "search/2024/03/15.json",  # its day's search file; the listing is as it was
        "status.json",
    ]
    assert "2024/03/14/index.html" not in changed and "static/recsync.css" not in changed
