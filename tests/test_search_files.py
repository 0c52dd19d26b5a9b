"""The search files as the agent publishes them: written with their days from the state
database, and kept consistent with the day manifests when a late CDR row re-publishes a
day (the link per call too)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from agent.cdr.sqlite import SqliteCdr
from agent.daemon import Agent
from agent.publish.index import talk_seconds
from tests.conftest import Site
from tests.support.cdr import SqliteCdrFile, cdr_row
from tests.support.mixmonitor import write_recording

WAIT = 30.0


def name(day: int, n: int) -> str:
    return f"2024/03/{day}/out-18005551234-1001-202403{day}-1015{n:02d}-1710497702.{day}{n}.wav"


def digits(value: object) -> str:
    return re.sub(r"[^0-9]", "", str(value or ""))


def consistent(dest: Path) -> dict[str, list[list[Any]]]:
    """Check every month file against the day manifests (the same calls, in the same order,
    with the same fields) and months.json against both; return the rows by day."""
    months = json.loads((dest / "search/months.json").read_text())["months"]
    by_day: dict[str, list[list[Any]]] = {}
    for month in months:
        document = json.loads((dest / f"search/{month['month']}.json").read_text())
        assert document["month"] == month["month"]
        days = dict((day, rows) for day, rows in document["days"])
        manifests = sorted(
            p.parent.relative_to(dest).as_posix()
            for p in dest.glob(f"{month['month'].replace('-', '/')}/*/manifest.json")
        )
        assert sorted(days) == manifests
        assert month["count"] == sum(len(rows) for rows in days.values())
        for day, rows in days.items():
            entries = json.loads((dest / day / "manifest.json").read_text())["recordings"]
            seen = [(f"{day}/{unquote(r[8])}", r[9], r[1], r[2], r[3], r[6], r[7]) for r in rows]
            assert seen == [
                (
                    e["file"],
                    e["uniqueid"],
                    digits(e["caller_number"]),
                    digits(e["dst"]),
                    e["caller_name"] or "",
                    e["disposition"] or "",
                    -1 if talk_seconds(e) is None else talk_seconds(e),
                )
                for e in entries
            ]
            assert [f"{day}/index.html#{r[9]}" for r in rows] == [e["link"] for e in entries]
            by_day[day] = rows
    return by_day


@pytest.fixture
def cdr_file(site: Site) -> SqliteCdrFile:
    return SqliteCdrFile(site.root / "master.db")


@pytest.fixture
def agent(site: Site, cdr_file: SqliteCdrFile, make_agent: Callable[..., Agent]) -> Agent:
    config = site.config(
        spool={"backfill_days": 100_000},
        cdr={"type": "sqlite", "path": str(cdr_file.path), "wait_seconds": WAIT},
        index={"enabled": True},
    )
    return make_agent(config, cdr=SqliteCdr(path=cdr_file.path, table="cdr"))


def test_search_files_follow_the_manifests_after_a_late_cdr_fill(
    site: Site, agent: Agent, cdr_file: SqliteCdrFile
) -> None:
    for day, n in ((14, 1), (15, 1), (15, 2)):
        write_recording(site.spool_file(name(day, n)), seed=n)
    cdr_file.insert(cdr_row("1710497702.141", cnam="On Time"))
    cdr_file.insert(cdr_row("1710497702.151", cnam="Also On Time", dst="+1 (212) 555-0100"))
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    agent.run_once(now + WAIT)  # 15/2's row never came in the wait: shipped "missing"
    rows = consistent(site.dest)
    assert [r[3] for r in rows["2024/03/15"]] == ["Also On Time", ""]
    assert rows["2024/03/15"][0][2] == "12125550100"  # digits only, what a search compares
    assert (site.dest / "search.html").is_file()
    assert 'href="search.html"' in (site.dest / "index.html").read_text()
    day14 = rows["2024/03/14"]
    march = site.dest / "search/2024-03.json"
    before = march.read_bytes()

    # A day published before the search files existed (its part is NULL) is made again
    # from its rows when its month is next written.
    with agent.store.conn:
        agent.store.conn.execute("UPDATE days SET search = NULL WHERE day = '2024/03/14'")
    cdr_file.insert(cdr_row("1710497702.152", cnam="Came Later", billsec=42))
    assert agent.fill_late_cdr(now + WAIT + 60) == 1
    rows = consistent(site.dest)
    assert [(r[3], r[7]) for r in rows["2024/03/15"]] == [("Also On Time", 90), ("Came Later", 42)]
    assert march.read_bytes() != before
    assert rows["2024/03/14"] == day14  # the same, made from its rows
    assert agent.store.days.searches("2024/03")[0][1] is not None
    entry = json.loads((site.dest / "2024/03/15/manifest.json").read_text())["recordings"][1]
    assert entry["link"] == "2024/03/15/index.html#1710497702.152"
    page = (site.dest / "2024/03/15/index.html").read_text()
    assert '<tr id="1710497702.152" tabindex="-1">' in page
