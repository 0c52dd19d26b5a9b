"""Legal holds: `recsync hold add|remove|list`; held recordings are never deleted by any
rule; numbers match on digits only; hostile values match nothing unintended."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.daemon import Agent
from agent.store.holds import BadHold, digits, normalise
from agent.store.state import Store
from tests.conftest import Site
from tests.support.mixmonitor import write_recording

MONTH = 31 * 86400
# Three calls: to 18005551234 from 1001, to 2125550100 from 1002, inbound from 5550199.
CALLS = [
    "2024/03/15/out-18005551234-1001-20240315-101500-1710497700.1.wav",
    "2024/03/15/out-2125550100-1002-20240315-101600-1710497760.2.wav",
    "2024/03/16/in-600-5550199-20240316-091500-1710580500.3.wav",
]


@pytest.fixture
def shipped(site: Site, make_agent: Callable[..., Agent]) -> Agent:
    for n, rel in enumerate(CALLS):
        write_recording(site.spool_file(rel), seconds=0.25, seed=n)
    config = site.config(spool={"backfill_days": 100_000}, retention={"spool_days": 30})
    agent = make_agent(config)
    agent.run_until_idle()
    return agent


def cli_run(config: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == code, result.output
    return result.output


def held(store: Store) -> set[str]:
    return {r.path for r in store.rows() if store.holds.covers(r.id)}


def test_held_recordings_are_never_deleted(shipped: Agent, site: Site) -> None:
    now = time.time()
    shipped.store.holds.add("number", "+1 800-555-1234", now=now)
    shipped.store.holds.add("day", "2024-03-16", now=now)
    report = shipped.retention.apply(now + MONTH)
    assert [r.path for r in report.retired] == [CALLS[1]]
    assert [r for r in CALLS if (site.spool / r).exists()] == [CALLS[0], CALLS[2]]
    assert shipped.retention.apply(now + 10 * MONTH).retired == []  # never, however old
    assert shipped.store.holds.remove("day", "2024-03-16", now=now)
    assert [r.path for r in shipped.retention.apply(now + MONTH).retired] == [CALLS[2]]


def test_a_hold_added_during_a_pass_wins(shipped: Agent, site: Site) -> None:
    """Held between the pass's query and the delete (the CLI is another process)."""
    calls: list[str] = []
    real_stat = shipped.transport.stat_remote

    def stat_then_hold(remote: str) -> Any:
        calls.append(remote)
        shipped.store.holds.add("uniqueid", "1710497760.2", now=time.time())
        return real_stat(remote)

    shipped.transport.stat_remote = stat_then_hold  # type: ignore[method-assign]
    report = shipped.retention.apply(time.time() + MONTH)
    assert (site.spool / CALLS[1]).exists()
    assert CALLS[1] not in {r.path for r in report.retired}
    assert report.kept["held"] >= 1


@pytest.mark.parametrize(
    ("kind", "value", "matches"),
    [
        ("number", "18005551234", {CALLS[0]}),
        ("number", "+1 (800) 555-1234", {CALLS[0]}),
        ("number", "1001", {CALLS[0]}),  # the caller (extension) too
        ("number", "5550199", {CALLS[2]}),
        ("uniqueid", "1710497760.2", {CALLS[1]}),
        ("day", "2024-03-15", {CALLS[0], CALLS[1]}),
    ],
)
def test_what_a_hold_covers(shipped: Agent, kind: str, value: str, matches: set[str]) -> None:
    shipped.store.holds.add(kind, value, now=time.time())
    assert held(shipped.store) == matches


HOSTILE = [
    ("number", "../../etc/passwd"),
    ("number", "'; DROP TABLE recordings; --"),
    ("number", "%"),
    ("number", "_"),
    ("number", "1" * 2048),
    ("number", "+"),
    ("uniqueid", "%"),
    ("uniqueid", "_"),
    ("uniqueid", "' OR '1'='1"),
    ("uniqueid", "x" * 2048),
    ("uniqueid", "../1710497760.2"),
    ("day", "2024-03-%"),
    ("day", "2024-03-1_"),
    ("day", "../2024-03-15"),
    ("day", "2024-02-30"),
]


@pytest.mark.parametrize(("kind", "value"), HOSTILE)
def test_a_hostile_value_matches_nothing_unintended(
    shipped: Agent, site: Site, kind: str, value: str
) -> None:
    with contextlib.suppress(BadHold):  # refused: names nothing
        shipped.store.holds.add(kind, value, now=time.time())
    assert held(shipped.store) == set()
    assert len(shipped.store.rows()) == len(CALLS)  # and nothing else happened to the table
    report = shipped.retention.apply(time.time() + MONTH)
    assert len(report.retired) == len(CALLS)


def test_digits_and_normal_forms() -> None:
    assert digits("+1 (800) 555-1234") == "18005551234"
    assert digits("٣٤٥") == ""  # other scripts' digits are not dialled
    assert digits(None) is None
    assert normalise("day", "2024-03-15") == "2024-03-15"
    assert normalise("uniqueid", " 1710497760.2 ") == "1710497760.2"
    for kind, value in [("number", "abc"), ("number", "1" * 33), ("day", "15/03/2024")]:
        with pytest.raises(BadHold):
            normalise(kind, value)


def test_hold_commands(shipped: Agent, site: Site) -> None:
    config = site.write_config(spool={"backfill_days": 100_000}, retention={"spool_days": 30})
    assert "no holds" in cli_run(config, "hold", "list")
    assert "added" in cli_run(config, "hold", "add", "--number", "+1 800 555 1234")
    assert "was there already" in cli_run(config, "hold", "add", "--number", "18005551234")
    cli_run(config, "hold", "add", "--day", "2024-03-16")
    listed = json.loads(cli_run(config, "hold", "list", "--json"))
    assert [(h["kind"], h["value"], h["recordings"]) for h in listed] == [
        ("number", "18005551234", 1),
        ("day", "2024-03-16", 1),
    ]
    assert "removed" in cli_run(config, "hold", "remove", "--day", "2024-03-16")
    assert "no hold on day" in cli_run(config, "hold", "remove", "--day", "2024-03-16", code=1)
    assert "exactly one" in cli_run(
        config, "hold", "add", "--number", "1", "--day", "2024-03-16", code=2
    )
    assert "no digits" in cli_run(config, "hold", "add", "--number", "../", code=1)
    shown = cli_run(config, "show", "1")  # the audit trail has nothing per recording ...
    assert "history:" in shown
    events = shipped.store.conn.execute(  # ... but the holds' history is kept
        "SELECT event, detail FROM events WHERE event LIKE 'hold-%' ORDER BY id"
    ).fetchall()
    assert events == [
        ("hold-added", "number 18005551234"),
        ("hold-added", "day 2024-03-16"),
        ("hold-removed", "day 2024-03-16"),
    ]
