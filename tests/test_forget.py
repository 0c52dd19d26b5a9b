"""`recsync forget --number N`: exactly the matching recordings leave the destination
(held ones stay), the pages and manifests are rewritten (checked in Chromium: the caller
is gone from the page), the CRM is told, and neither backfill nor `state rebuild` brings
them back. A hostile number matches nothing unintended."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import cli
from tests.conftest import Site
from tests.support.chromium import Tab  # its fixtures, browser and tab, are shared
from tests.support.crm import CrmServer
from tests.support.mixmonitor import write_recording

NUMBER = "18005551234"
ERASE = [  # to the number, and from it
    "2024/03/15/out-18005551234-1001-20240315-101500-1710497700.1.wav",
    "2024/03/15/in-600-18005551234-20240315-101600-1710497760.2.wav",
]
KEEP = "2024/03/15/out-2125550100-1002-20240315-101700-1710497820.3.wav"
HELD = "2024/03/16/out-18005551234-1001-20240316-091500-1710580500.4.wav"
CALLS = [*ERASE, KEEP, HELD]


@pytest.fixture
def shipped(site: Site, crm: CrmServer) -> Path:
    for n, rel in enumerate(CALLS):
        write_recording(site.spool_file(rel), seconds=0.25, seed=n)
    config = site.write_config(
        spool={"backfill_days": 100_000},
        index={"enabled": True},
        webhook={"url": f"{crm.base}/hooks"},
    )
    recsync(config, "run", "--once")
    recsync(config, "hold", "add", "--uniqueid", "1710580500.4")
    assert all(site.remote(rel).exists() for rel in CALLS)
    return config


def recsync(config: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == code, result.output
    return result.output


def table(site: Site, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{site.state / 'state.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def states(site: Site) -> dict[str, str]:
    return dict(table(site, "SELECT path, state FROM recordings"))  # type: ignore[arg-type]


def test_without_yes_it_only_says_what_it_would_do(site: Site, shipped: Path) -> None:
    remotes = {rel: site.remote(rel) for rel in CALLS}
    said = recsync(shipped, "forget", "--number", "+1 (800) 555-1234")
    assert "2 recording(s) would be erased" in said
    assert "held, kept" in said and remotes[HELD].name in said
    assert all(p.exists() for p in remotes.values())
    assert set(states(site).values()) == {"done"}


def test_forget_removes_exactly_the_matching_recordings(
    site: Site, shipped: Path, crm: CrmServer, tab: Tab
) -> None:
    remotes = {rel: site.remote(rel) for rel in CALLS}
    said = recsync(shipped, "forget", "--number", "1-800-555-1234", "--yes")
    assert "2 recording(s) erased from the destination" in said
    assert [rel for rel, p in remotes.items() if p.exists()] == [KEEP, HELD]
    assert all((site.spool / rel).exists() for rel in CALLS)  # without --spool
    manifest = json.loads((site.dest / "2024/03/15/manifest.json").read_text())
    assert [e["original"] for e in manifest["recordings"]] == [KEEP]
    assert NUMBER not in (site.dest / "2024/03/15/manifest.json").read_text()
    # The day page in Chromium: one call left, the caller nowhere on it.
    tab.page.goto((site.dest / "2024/03/15/index.html").as_uri())
    assert tab.page.locator("#calls tbody tr").count() == 1
    text = tab.page.inner_text("body")
    assert "2125550100" in text and NUMBER not in text and "555-1234" not in text
    assert tab.problems == []
    # The CRM is told, per recording, with no caller in it.
    deleted = [json.loads(r.body) for r in crm.received if b"recording.deleted" in r.body]
    assert sorted(d["recording"]["original"] for d in deleted) == sorted(ERASE)
    assert all(NUMBER not in json.dumps(d["recording"]["caller_number"]) for d in deleted)
    # The rows: expired, the caller fields cleared; the ledger: a hash, no number.
    assert states(site) == {ERASE[0]: "expired", ERASE[1]: "expired", KEEP: "done", HELD: "done"}
    erased = table(
        site, "SELECT caller_number, src, dst, cdr_dst FROM recordings WHERE state = 'expired'"
    )
    assert erased == [(None, None, None, None)] * 2
    ((digest, uniqueids),) = table(site, "SELECT number_sha256, uniqueids FROM erasures")
    assert NUMBER not in digest and sorted(json.loads(uniqueids)) == [
        "1710497700.1",
        "1710497760.2",
    ]
    assert NUMBER not in (site.dest / "erasures.json").read_text()


def test_erased_calls_never_come_back(site: Site, shipped: Path) -> None:
    recsync(shipped, "forget", "--number", NUMBER, "--yes")
    assert "0 recording(s)" in recsync(shipped, "backfill", "--dry-run")
    recsync(shipped, "state", "rebuild", "--force")
    after = states(site)
    assert (after[ERASE[0]], after[ERASE[1]], after[KEEP]) == ("expired", "expired", "done")
    recsync(shipped, "run", "--once")  # the originals are still in the spool
    assert not site.remote(ERASE[0]).exists() and not site.remote(ERASE[1]).exists()
    assert len(list(site.dest.rglob("*.wav"))) == 2  # KEEP and HELD only
    assert "0 recording(s)" in recsync(shipped, "backfill", "--dry-run")
    # The rebuilt database has the ledger too.
    assert len(table(site, "SELECT * FROM erasures")) == 1


def test_forget_with_spool_removes_the_originals(site: Site, shipped: Path) -> None:
    recsync(shipped, "forget", "--number", NUMBER, "--yes", "--spool")
    assert [rel for rel in CALLS if (site.spool / rel).exists()] == [KEEP, HELD]


@pytest.mark.parametrize(
    "number",
    ["../", "%", "_", "' OR '1'='1", "1" * 2048, "%1%", "1001%", "18005551234' --"],
)
def test_a_hostile_number_erases_nothing_unintended(site: Site, shipped: Path, number: str) -> None:
    result = CliRunner().invoke(
        cli, ["--config", str(shipped), "forget", "--number", number, "--yes"]
    )
    digits = "".join(c for c in number if c.isdigit())
    if not digits or len(digits) > 32:
        assert result.exit_code == 1  # refused: names nothing
    expected = {"18005551234": 2, "1001": 1}.get(digits, 0)  # its digits, exactly
    assert sum(s == "expired" for s in states(site).values()) == expected
    assert len(list(site.dest.rglob("*.wav"))) == len(CALLS) - expected


@pytest.mark.parametrize("point", ["forget:begun", "forget:removed"])
def test_a_forget_cut_short_finishes_when_run_again(
    site: Site, shipped: Path, crm: CrmServer, point: str
) -> None:
    remotes = {rel: site.remote(rel) for rel in CALLS}
    argv = ["--config", str(shipped), "forget", "--number", NUMBER, "--yes"]
    done = subprocess.run(
        [sys.executable, "-m", "agent", *argv],
        env={**os.environ, "RECSYNC_CRASH_AT": point},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL
    assert {states(site)[rel] for rel in ERASE} == {"expired"}  # never shipped again from here
    recsync(shipped, "forget", "--number", NUMBER, "--yes")
    assert [rel for rel, p in remotes.items() if p.exists()] == [KEEP, HELD]
    manifest = (site.dest / "2024/03/15/manifest.json").read_text()
    assert NUMBER not in manifest
    assert (
        table(site, "SELECT caller_number, src FROM recordings WHERE state = 'expired'")
        == [(None, None)] * 2
    )
    deleted = [json.loads(r.body) for r in crm.received if b"recording.deleted" in r.body]
    assert sorted(d["recording"]["original"] for d in deleted) == sorted(ERASE)
