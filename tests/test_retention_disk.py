"""The free-space floor on a real small file system (a 1 MiB tmpfs as the spool): below
retention.min_free_percent an alert and a metric; with on_low_disk = "prune" the oldest
verified originals go first, whatever their age, until the floor is met, never one that
has not shipped."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.alerts import Alerts
from agent.config import AlertsConfig
from agent.daemon import Agent
from agent.metrics import Metrics
from agent.roles.retention import PASS_SECONDS
from tests.conftest import Site
from tests.support.disks import free_bytes
from tests.support.mixmonitor import write_recording

FLOOR = 50.0


def calls(count: int) -> list[str]:
    return [
        f"2024/03/15/out-18005551234-1001-20240315-10{n:02d}00-1710497702.{n}.wav"
        for n in range(count)
    ]


def fill(spool: Path, rels: list[str]) -> None:
    """About 80 KB each, their mtimes an hour apart in order: rels[0] is the oldest."""
    base = time.time() - 86400
    for n, rel in enumerate(rels):
        path = spool / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_recording(path, seconds=5, seed=n)
        os.utime(path, (base + n * 3600, base + n * 3600))


def percent_free(spool: Path) -> float:
    st = os.statvfs(spool)
    return 100.0 * st.f_bavail / st.f_blocks


def small_spool_agent(
    site: Site, make_agent: Callable[..., Agent], spool: Path, on_low_disk: str
) -> Agent:
    config = site.config(
        spool={"path": str(spool), "backfill_days": 100_000},
        retention={"min_free_percent": FLOOR, "on_low_disk": on_low_disk},
    )
    return make_agent(config)


def test_prune_removes_the_oldest_shipped_until_the_floor_is_met(
    site: Site, make_agent: Callable[..., Agent], small_disk: Path
) -> None:
    shipped = calls(8)
    unshipped = "2024/03/15/not-a-freepbx-name.wav"  # quarantined: never ships
    fill(small_disk, [unshipped, *shipped])  # the oldest of all has not shipped
    agent = small_spool_agent(site, make_agent, small_disk, "prune")
    agent.retention.next_pass_at = float("inf")  # held off while it ships
    agent.run_until_idle()
    assert agent.store.by_stem(unshipped[:-4]).state == "quarantined"
    assert percent_free(small_disk) < FLOOR
    agent.retention.metrics = metrics = Metrics()

    dry = agent.retention.apply(time.time(), dry_run=True)
    assert percent_free(small_disk) < FLOOR  # a dry run changes nothing
    agent.retention.next_pass_at = 0
    agent.run_once(time.time())  # the running agent's pass; the age rule is off
    report = agent.retention.last_report
    assert report is not None
    gone = [r.path for r in report.retired]
    assert gone == [r.path for r in dry.retired]  # the dry run said what would go
    assert gone == shipped[: len(gone)] and 0 < len(gone) < len(shipped)  # oldest first
    assert {r.rule for r in report.retired} == {"low-disk"}
    assert percent_free(small_disk) >= FLOOR  # the floor is met ...
    assert not (small_disk / shipped[len(gone) - 1]).exists()
    assert (small_disk / shipped[len(gone)]).exists()  # ... and no more went
    assert (small_disk / unshipped).exists()  # never one that has not shipped
    for rel in gone:
        assert site.remote(rel).exists()
    assert agent.retention.problem is None  # the floor is met: no alert left
    free = metrics.registry.get_sample_value("recsync_spool_free_bytes")
    assert free == free_bytes(small_disk)
    ratio = metrics.registry.get_sample_value("recsync_spool_free_ratio")
    assert ratio is not None and ratio >= FLOOR / 100
    removed = metrics.registry.get_sample_value(
        "recsync_retention_removed_total", {"rule": "low-disk"}
    )
    assert removed == len(gone)


def test_alert_mode_deletes_nothing_and_says_so(
    site: Site, make_agent: Callable[..., Agent], small_disk: Path
) -> None:
    rels = calls(9)
    fill(small_disk, rels)
    agent = small_spool_agent(site, make_agent, small_disk, "alert")
    agent.run_until_idle()
    sent: list[dict[str, str]] = []

    def run(argv: Sequence[str], env: Mapping[str, str]) -> None:
        sent.append({k: v for k, v in env.items() if k.startswith("RECSYNC_ALERT")})

    settings = AlertsConfig(command=("notify",), webhook=None, after_failures=5, backlog_minutes=60)
    agent.health.alerts = Alerts(settings, run=run)
    agent.retention.metrics = metrics = Metrics()
    now = time.time()
    report = agent.retention.step(now + PASS_SECONDS)
    assert report is not None and report.low_disk and report.retired == []
    assert all((small_disk / r).exists() for r in rels)
    agent.health.check(now)
    assert [s["RECSYNC_ALERT"] for s in sent] == ["problem"]
    assert "spool disk" in sent[0]["RECSYNC_ALERT_REASON"]
    assert f"floor {FLOOR:g}%" in sent[0]["RECSYNC_ALERT_REASON"]
    ratio: Any = metrics.registry.get_sample_value("recsync_spool_free_ratio")
    assert ratio < FLOOR / 100
    # The admin frees space: the next pass clears the incident.
    for rel in rels[:6]:
        (small_disk / rel).unlink()
    agent.retention.step(now + 3 * PASS_SECONDS)
    agent.health.check(now + 3600)
    assert [s["RECSYNC_ALERT"] for s in sent] == ["problem", "recovered"]


def test_prune_does_not_move_to_a_folder_on_the_same_disk(
    site: Site, make_agent: Callable[..., Agent], small_disk: Path
) -> None:
    """Moving within the spool's file system frees nothing: it would empty the spool."""
    spool, archive = small_disk / "monitor", small_disk / "archive"
    rels = calls(9)
    fill(spool, rels)
    config = site.config(
        spool={"path": str(spool), "backfill_days": 100_000},
        retention={"min_free_percent": FLOOR, "on_low_disk": "prune", "move_to": str(archive)},
    )
    agent = make_agent(config)
    agent.run_until_idle()
    report = agent.retention.last_report
    assert report is not None and report.retired == []
    assert report.stopped is not None and "frees nothing" in report.stopped
    assert all((spool / r).exists() for r in rels)
