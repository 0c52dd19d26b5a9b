"""Destination retention: day folders older than retention.destination_days lose their
files, manifest and page (held recordings stay); their rows become expired, recorded in
the destination's ledger, and neither backfill nor `state rebuild` ships them again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from agent.cli import cli
from agent.daemon import Agent
from tests.conftest import Site
from tests.support.mixmonitor import write_recording

OLD = "2024/03/15"  # long past any destination_days
OLDER = "2024/03/14"
CALLS = [
    f"{OLDER}/out-18005551234-1001-20240314-101500-1710411300.1.wav",
    f"{OLD}/out-18005551234-1001-20240315-101500-1710497700.2.wav",
    f"{OLD}/out-2125550100-1002-20240315-101600-1710497760.3.wav",
]
TABLES: dict[str, Any] = {
    "spool": {"backfill_days": 100_000},
    "retention": {"destination_days": 30},
    "index": {"enabled": True},
}


def spool_calls(site: Site) -> None:
    for n, rel in enumerate(CALLS):
        write_recording(site.spool_file(rel), seconds=0.25, seed=n)


def cli_run(config: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def states(site: Site) -> dict[str, str]:
    config = site.write_config(**TABLES)
    listed = json.loads(cli_run(config, "list", "--json", "--limit", "100"))
    return {r["path"]: r["state"] for r in listed}


def test_old_days_leave_the_destination_but_held_recordings_stay(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    spool_calls(site)
    agent = make_agent(site.config(**TABLES))
    agent.retention.next_pass_at = float("inf")  # held off while it ships
    agent.run_until_idle()
    remote = {rel: site.remote(rel) for rel in CALLS}
    assert all(p.exists() for p in remote.values())
    agent.store.holds.add("uniqueid", "1710497760.3", now=time.time())

    dry = agent.retention.apply(time.time(), dry_run=True)
    assert sorted(r.path for r in dry.expired) == sorted(
        agent.store.by_stem(r[:-4]).remote_path for r in CALLS[:2]
    )
    assert all(p.exists() for p in remote.values())  # a dry run changes nothing

    agent.retention.next_pass_at = 0
    agent.run_once(time.time())  # expires, then the pages are rewritten
    agent.run_once(time.time())
    assert not remote[CALLS[0]].exists() and not remote[CALLS[1]].exists()
    assert remote[CALLS[2]].exists()  # held
    assert not (site.dest / OLDER / "manifest.json").exists()  # nothing left that day
    assert not (site.dest / OLDER / "index.html").exists()
    kept = json.loads((site.dest / OLD / "manifest.json").read_text())["recordings"]
    assert [e["original"] for e in kept] == [CALLS[2]]
    page = (site.dest / OLD / "index.html").read_text()
    assert "2125550100" in page and "18005551234" not in page
    root = (site.dest / "index.html").read_text()
    assert "2024-03-15" in root or "2024/03/15" in root
    assert "2024/03/14" not in root and "2024-03-14" not in root
    ledger = json.loads((site.dest / "expired" / "2024-03.json").read_text())["expired"]
    assert sorted(e["original"] for e in ledger) == sorted(CALLS[:2])
    assert states(site) == {CALLS[0]: "expired", CALLS[1]: "expired", CALLS[2]: "done"}
    # The originals are still in the spool: backfill does not bring them back.
    config = site.write_config(**TABLES)
    assert "0 recording(s)" in cli_run(config, "backfill", "--dry-run")
    # A changed original does not ship again either.
    agent.pipeline.observe(CALLS[0], time.time())
    assert agent.store.by_stem(CALLS[0][:-4]).state == "expired"


def test_state_rebuild_keeps_them_expired(site: Site, make_agent: Callable[..., Agent]) -> None:
    spool_calls(site)
    config = site.write_config(**TABLES)
    cli_run(config, "run", "--once")  # ships, then expires all (no hold)
    assert not any(site.dest.rglob("*.wav"))
    cli_run(config, "state", "rebuild", "--force")
    assert set(states(site).values()) == {"expired"}
    cli_run(config, "run", "--once")
    assert not any(site.dest.rglob("*.wav"))  # nothing shipped again
    assert "0 recording(s)" in cli_run(config, "backfill", "--dry-run")


def test_a_pass_cut_after_the_ledger_is_finished_by_the_next(site: Site) -> None:
    spool_calls(site)
    keep = {**TABLES, "retention": {}}
    cli_run(site.write_config(**keep), "run", "--once")  # shipped, nothing expired
    config = site.write_config(**TABLES)
    env = {**os.environ, "RECSYNC_CRASH_AT": "retention:ledger-written"}
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "retention"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL
    assert len(list(site.dest.rglob("*.wav"))) >= 1  # killed before the removals
    assert set(states(site).values()) == {"expired"}
    cli_run(config, "retention")
    assert not any(site.dest.rglob("*.wav"))
    cli_run(config, "index", "rebuild")
    assert not (site.dest / OLD / "manifest.json").exists()
