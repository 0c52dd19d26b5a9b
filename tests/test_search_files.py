"""The search files as the agent publishes them: written with their days from the state
database, and kept consistent with the day manifests when a late CDR row re-publishes a
day (the link per call too)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from agent.cdr.sqlite import SqliteCdr
from agent.cli import cli
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


def consistent(dest: Path, site: str | None = None) -> dict[str, list[list[Any]]]:
    """Check every day's search file against its manifest (the same calls, in the same
    order, with the same fields), months.json against both, and that no search file is
    left of a day without a manifest; return the rows by day."""
    listing = json.loads((dest / "search/months.json").read_text())
    assert listing["site"] == site
    listed = [day for m in listing["months"] for day in m["days"]]
    assert listed == sorted(listed, reverse=True)
    manifests = sorted(
        p.parent.relative_to(dest).as_posix() for p in dest.glob("*/*/*/manifest.json")
    )
    files = sorted(
        p.relative_to(dest / "search").as_posix()[:-5] for p in (dest / "search").glob("*/*/*.json")
    )
    assert sorted(listed) == manifests == files
    assert not list((dest / "search").glob("????-??.json"))  # the first format's
    by_day: dict[str, list[list[Any]]] = {}
    for month in listing["months"]:
        assert (month["first"], month["last"]) == (month["days"][-1], month["days"][0])
    for day in manifests:
        document = json.loads((dest / "search" / f"{day}.json").read_text())
        assert document["day"] == day
        rows = document["rows"]
        entries = json.loads((dest / day / "manifest.json").read_text())["recordings"]
        assert all(e.get("site") == site for e in entries)
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
    day14 = (site.dest / "search/2024/03/14.json").read_bytes()
    day15 = site.dest / "search/2024/03/15.json"
    before = day15.read_bytes()

    cdr_file.insert(cdr_row("1710497702.152", cnam="Came Later", billsec=42))
    assert agent.fill_late_cdr(now + WAIT + 60) == 1
    rows = consistent(site.dest)
    assert [(r[3], r[7]) for r in rows["2024/03/15"]] == [("Also On Time", 90), ("Came Later", 42)]
    assert day15.read_bytes() != before
    assert (site.dest / "search/2024/03/14.json").read_bytes() == day14  # not rewritten
    entry = json.loads((site.dest / "2024/03/15/manifest.json").read_text())["recordings"][1]
    assert entry["link"] == "2024/03/15/index.html#1710497702.152"
    page = (site.dest / "2024/03/15/index.html").read_text()
    assert '<tr id="1710497702.152" tabindex="-1">' in page


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_search_files_follow_a_recording_shipped_again(
    site: Site, agent: Agent, cdr_file: SqliteCdrFile
) -> None:
    """A recording replaced in the spool ships again: its day's search file lists its
    new version once (its new length from the audio, with no CDR duration), as the
    manifest does; an .mp3 that replaces a .wav is the same call, with the new name."""
    first, second = name(15, 1), name(15, 2)
    write_recording(site.spool_file(first), seconds=1.0, seed=1)
    write_recording(site.spool_file(second), seconds=2.0, seed=2)
    cdr_file.insert(cdr_row("1710497702.151", cnam="Ann", billsec=None, duration=None))
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    agent.run_once(now + WAIT)
    rows = consistent(site.dest)["2024/03/15"]
    assert [(r[3], r[7]) for r in rows] == [("Ann", 1), ("", 2)]

    write_recording(site.spool_file(first), seconds=7.0, seed=9)  # replaced, longer
    age(site.spool_file(first), 60)
    wav = site.spool_file(second)
    mp3 = wav.with_suffix(".mp3")
    mp3.write_bytes(wav.read_bytes())  # an admin's script "converted" it
    age(mp3, 60)
    wav.unlink()
    later = now + WAIT + 10
    agent.pipeline.observe(first, later)
    agent.pipeline.observe(second[:-4] + ".mp3", later)
    agent.run_once(later)
    agent.run_once(later + WAIT)
    rows = consistent(site.dest)["2024/03/15"]
    assert [(r[3], r[7]) for r in rows] == [("Ann", 7), ("", 2)]
    assert [unquote(r[8]).rsplit(".", 1)[1] for r in rows] == ["wav", "mp3"]
    assert len({r[9] for r in rows}) == 2


def test_search_files_follow_an_erasure(site: Site) -> None:
    """`recsync forget --number`: the erased calls leave their days' search files with
    their manifests, a day left empty loses its file, and the number is nowhere in them."""
    number = "18005551234"
    for day, n in ((14, 1), (15, 1), (15, 2)):
        write_recording(site.spool_file(name(day, n)), seed=n)
    keep = "2024/03/15/in-1001-2125550100-20240315-101503-1710497702.153.wav"
    write_recording(site.spool_file(keep), seed=3)
    config = site.write_config(spool={"backfill_days": 100_000}, index={"enabled": True})
    invoke(config, "run", "--once")
    before = consistent(site.dest)
    assert len(before["2024/03/15"]) == 3 and len(before["2024/03/14"]) == 1
    said = invoke(config, "forget", "--number", "+1 800 555 1234", "--yes")
    assert "3 recording(s) erased" in said
    rows = consistent(site.dest)
    assert list(rows) == ["2024/03/15"]  # the 14th held only erased calls
    assert [r[1] for r in rows["2024/03/15"]] == ["2125550100"]
    assert not (site.dest / "search/2024/03/14.json").exists()
    for path in (site.dest / "search").rglob("*.json"):
        assert number not in path.read_text() and "5551234" not in path.read_text()


def invoke(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_root_of_month_files_gets_a_file_per_day_once(
    site: Site, agent: Agent, cdr_file: SqliteCdrFile
) -> None:
    """A root published with the first format (a file a month, no day files): the next
    publish writes every day's file, removes the month files, and says so in the state."""
    for day, n in ((14, 1), (15, 1)):
        write_recording(site.spool_file(name(day, n)), seed=n)
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    agent.run_once(now + WAIT)
    for path in (site.dest / "search").rglob("??.json"):
        path.unlink()
    (site.dest / "search/2024-03.json").write_text('{"v":1}')
    with agent.store.conn:
        agent.store.conn.execute("DELETE FROM meta WHERE key = 'search_layout'")
    cdr_file.insert(cdr_row("1710497702.151", cnam="Late"))
    assert agent.fill_late_cdr(now + WAIT + 60) == 1
    rows = consistent(site.dest)  # both days' files, no month file
    assert [r[3] for r in rows["2024/03/15"]] == ["Late"]
    assert agent.store.meta("search_layout") == "days"
    day14 = site.dest / "search/2024/03/14.json"
    made = day14.stat().st_mtime_ns
    listing = site.dest / "search/months.json"
    listed = listing.stat().st_mtime_ns
    cdr_file.insert(cdr_row("1710497702.152", cnam="x"))
    write_recording(site.spool_file(name(15, 2)), seed=2)
    agent.pipeline.observe(name(15, 2), now + WAIT + 120)
    agent.run_once(now + WAIT + 120)
    assert len(consistent(site.dest)["2024/03/15"]) == 2
    assert day14.stat().st_mtime_ns == made  # once: later publishes write their days only
    assert listing.stat().st_mtime_ns == listed  # a call on a day listed already
    write_recording(site.spool_file(name(16, 1)), seed=3)
    agent.pipeline.observe(name(16, 1), now + WAIT + 180)
    agent.run_once(now + WAIT + 180)
    agent.run_once(now + 2 * WAIT + 180)
    assert "2024/03/16" in consistent(site.dest)  # a new day: listed
