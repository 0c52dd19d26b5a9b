"""Caller ID in the pipeline: a bounded wait for late CDR rows that holds up nobody else,
shipping without, filling in later; driven pass by pass against a real SQLite CDR."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from agent.cdr.sqlite import SqliteCdr
from agent.daemon import Agent
from tests.conftest import Site
from tests.support.cdr import SqliteCdrFile, cdr_row
from tests.support.mixmonitor import write_recording

DAY = "2024/03/15"
WAIT = 30.0


def name(n: int) -> str:
    return f"out-18005551234-1001-20240315-1015{n:02d}-1710497702.{n}.wav"


@pytest.fixture
def cdr_file(site: Site) -> SqliteCdrFile:
    return SqliteCdrFile(site.root / "master.db")


def sqlite_agent(
    site: Site, cdr_file: SqliteCdrFile, make_agent: Callable[..., Agent], wait: float
) -> Agent:
    config = site.config(
        spool={"backfill_days": 100_000},
        cdr={"type": "sqlite", "path": str(cdr_file.path), "wait_seconds": wait},
    )
    return make_agent(config, cdr=SqliteCdr(path=cdr_file.path, table="cdr"))


@pytest.fixture
def agent(site: Site, cdr_file: SqliteCdrFile, make_agent: Callable[..., Agent]) -> Agent:
    return sqlite_agent(site, cdr_file, make_agent, WAIT)


def entry(site: Site, n: int) -> dict[str, Any]:
    manifest = json.loads((site.dest / DAY / "manifest.json").read_text())
    (found,) = [e for e in manifest["recordings"] if e["original"] == f"{DAY}/{name(n)}"]
    return dict(found)


def state(agent: Agent, n: int) -> str:
    row = agent.store.by_stem(f"{DAY}/{name(n)}"[:-4])
    assert row is not None
    return row.state


def record(site: Site, *numbers: int) -> None:
    for n in numbers:
        write_recording(site.spool_file(f"{DAY}/{name(n)}"), seed=n)


def test_row_already_there_fills_the_manifest(
    site: Site, agent: Agent, cdr_file: SqliteCdrFile
) -> None:
    record(site, 1)
    cdr_file.insert(
        cdr_row("1710497702.1", recordingfile=name(1), did="", clid='"Front Desk" <1001>')
    )
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    got = entry(site, 1)
    assert got["cdr"] == "found"
    assert (got["caller_number"], got["caller_name"], got["dst"]) == (
        "1001",
        "Front Desk",
        "18005551234",
    )
    assert (got["duration"], got["billsec"], got["disposition"]) == (95, 90, "ANSWERED")
    assert got["linkedid"] == "1710497702.1"


def test_late_row_is_waited_for_without_holding_up_others(
    site: Site, agent: Agent, cdr_file: SqliteCdrFile
) -> None:
    record(site, 1, 2)
    cdr_file.insert(cdr_row("1710497702.2"))  # recording 2's row is there; 1's is late
    now = time.time()
    agent.start(now)
    next_due = agent.run_once(now)
    assert (state(agent, 1), state(agent, 2)) == ("waiting_cdr", "done")
    assert not site.remote(f"{DAY}/{name(1)}").exists()
    assert next_due is not None and now < next_due < now + 1  # asks again soon

    cdr_file.insert(cdr_row("1710497702.1", cnam="Late But There"))
    agent.run_once(next_due)
    assert state(agent, 1) == "done"
    assert entry(site, 1)["caller_name"] == "Late But There"


def test_row_that_never_comes_ships_missing_then_is_filled_in(
    site: Site, agent: Agent, cdr_file: SqliteCdrFile
) -> None:
    record(site, 1)
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    assert state(agent, 1) == "waiting_cdr"
    agent.run_once(now + WAIT)  # the wait is over
    shipped = site.remote(f"{DAY}/{name(1)}")
    assert state(agent, 1) == "done" and shipped.exists()
    got = entry(site, 1)
    assert (got["cdr"], got["caller_name"], got["caller_number"]) == ("missing", None, "1001")

    cdr_file.insert(cdr_row("1710497702.1", cnam="Came Later"))
    assert agent.fill_late_cdr(now + WAIT + 60) == 1
    got = entry(site, 1)
    assert (got["cdr"], got["caller_name"]) == ("found", "Came Later")
    assert got["file"] == shipped.relative_to(site.dest).as_posix()  # the name stays
    assert shipped.exists()
    assert agent.fill_late_cdr(now + WAIT + 120) == 0  # found rows are not asked again


def test_unreachable_cdr_store_delays_but_never_blocks(
    site: Site, agent: Agent, cdr_file: SqliteCdrFile
) -> None:
    record(site, 1)
    moved = cdr_file.path.with_suffix(".away")
    cdr_file.path.rename(moved)  # the store is gone for a while
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    assert state(agent, 1) == "waiting_cdr"
    agent.run_once(now + WAIT)
    assert state(agent, 1) == "done"  # shipped on time, without caller ID
    health = json.loads(agent.store.meta("cdr") or "{}")
    assert health["state"] == "failing" and "does not exist" in health["reason"]

    moved.rename(cdr_file.path)
    cdr_file.insert(cdr_row("1710497702.1"))
    agent.fill_late_cdr(now + WAIT + 60)
    assert entry(site, 1)["cdr"] == "found"
    assert json.loads(agent.store.meta("cdr") or "{}") == {"state": "ok", "reason": None}


HOSTILE = [
    '<script>alert("x")</script>',
    "../../../etc/passwd",
    "\x00\x07\x1b[2J\u202eevil\u200b",
    "'; DROP TABLE cdr; --",
    "\u00e9t\u00e9 " * 500,  # 2 KB of text
]


@pytest.mark.parametrize("text", HOSTILE, ids=["script", "dots", "control", "sql", "2kb"])
def test_hostile_cdr_text_is_kept_verbatim_in_the_manifest(
    site: Site, agent: Agent, cdr_file: SqliteCdrFile, text: str
) -> None:
    record(site, 1)
    cdr_file.insert(cdr_row("1710497702.1", cnam=text, cnum=text, dst=text))
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    got = entry(site, 1)
    assert (got["caller_name"], got["caller_number"], got["dst"]) == (text, text, text)
    # The remote path comes from the file name, not from CDR text.
    shipped = site.remote(f"{DAY}/{name(1)}").relative_to(site.dest).as_posix()
    assert shipped.startswith(f"{DAY}/1015") and shipped.endswith("_1710497702.1.wav")
    assert site.shipped() == sorted([shipped, f"{DAY}/manifest.json"])


def test_no_cdr_source_ships_at_once_with_cdr_off(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    record(site, 1)
    agent = make_agent(site.config(spool={"backfill_days": 100_000}))
    agent.run_until_idle()
    assert entry(site, 1)["cdr"] == "off"  # never looked for, unlike "missing"


def test_cdr_wait_is_bounded_in_run_once(
    site: Site, cdr_file: SqliteCdrFile, make_agent: Callable[..., Agent]
) -> None:
    record(site, 1)
    agent = sqlite_agent(site, cdr_file, make_agent, wait=1)
    started = time.monotonic()
    agent.run_until_idle()  # waits out the CDR (1 s), then ships without
    assert 1 <= time.monotonic() - started < 10
    assert entry(site, 1)["cdr"] == "missing"
