"""Spool retention on real spool folders and real destinations (a local folder, SFTP to the
test sshd): only verified, old enough, unheld originals leave the spool; a remote copy
missing or different keeps its original and ships it again; the destination down
deletes nothing. Time is injected: `apply(now)` a month on, not a month of waiting."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.daemon import Agent
from agent.roles.retention import PASS_SECONDS
from agent.transport import open_transport
from tests.conftest import Site
from tests.support.mixmonitor import write_recording
from tests.support.s3 import RadosGateway
from tests.support.sshd import Sshd
from tests.test_s3 import s3_destination

DAY = "2024/03/15"
MONTH = 31 * 86400


def names(count: int, first: int = 0) -> list[str]:
    return [
        f"{DAY}/out-18005551234-1001-20240315-1015{n:02d}-1710497702.{n}.wav"
        for n in range(first, first + count)
    ]


def record(site: Site, rels: list[str], seconds: float = 0.5) -> dict[str, bytes]:
    return {
        rel: write_recording(site.spool_file(rel), seconds=seconds, seed=n)
        for n, rel in enumerate(rels)
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_for(site: Site, **tables: dict[str, Any]) -> Any:
    tables.setdefault("retention", {"spool_days": 30})
    return site.config(spool={"backfill_days": 100_000}, **tables)


def shipped_agent(
    site: Site, make_agent: Callable[..., Agent], rels: list[str], **tables: dict[str, Any]
) -> Agent:
    """An agent that has shipped every recording in `rels` (now, in real time), its
    retention not applied yet (`run --once` applies it after shipping)."""
    config = config_for(site, **tables)
    transport = None if config.destination.type == "local" else open_transport(config.destination)
    agent = make_agent(config, transport=transport)
    agent.retention.next_pass_at = float("inf")
    agent.run_until_idle()
    agent.retention.next_pass_at = 0.0
    assert {agent.store.by_stem(r[:-4]).state for r in rels} == {"done"}
    return agent


def row(agent: Agent, rel: str) -> Any:
    found = agent.store.by_stem(rel[:-4])
    assert found is not None
    return found


def events(agent: Agent, rel: str) -> list[tuple[str, str | None]]:
    return agent.store.conn.execute(
        "SELECT event, detail FROM events WHERE recording_id = ? ORDER BY id", (row(agent, rel).id,)
    ).fetchall()


def in_spool(site: Site, rels: list[str]) -> list[str]:
    return [r for r in rels if (site.spool / r).exists()]


# --- off unless configured ---------------------------------------------------------


def test_nothing_is_deleted_unless_configured(site: Site, make_agent: Callable[..., Agent]) -> None:
    rels = names(2)
    record(site, rels)
    agent = shipped_agent(site, make_agent, rels, retention={})
    assert not agent.retention.enabled
    report = agent.retention.apply(time.time() + 100 * 365 * 86400)
    assert report.retired == [] and report.disk is None
    assert agent.retention.step(time.time() + 100 * 365 * 86400) is None
    assert in_spool(site, rels) == rels


# --- the age rule, local destination -----------------------------------------------


def test_only_old_enough_unchanged_unheld_originals_go(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    rels = names(5)
    data = record(site, rels)
    agent = shipped_agent(site, make_agent, rels)
    now = time.time()
    assert agent.retention.apply(now + 29 * 86400).retired == []  # not old enough yet
    assert in_spool(site, rels) == rels

    held, changed, pending = rels[1], rels[2], names(1, first=9)[0]
    assert agent.store.holds.add("uniqueid", row(agent, held).uniqueid, now=now)
    os.utime(site.spool / changed, ns=(0, row(agent, changed).mtime_ns + 1))  # rewritten
    record(site, [pending])  # in the spool, not shipped yet
    agent.pipeline.observe(pending, now)

    report = agent.retention.apply(now + MONTH)
    assert sorted(r.path for r in report.retired) == [rels[0], rels[3], rels[4]]
    assert report.kept == {"changed since it shipped": 1}
    assert in_spool(site, [*rels, pending]) == [held, changed, pending]
    for rel in (rels[0], rels[3], rels[4]):  # the copy stays, byte for byte
        assert site.remote(rel).read_bytes() == data[rel]
        assert row(agent, rel).spool_removed_at == now + MONTH
        assert row(agent, rel).state == "done"
        event, detail = events(agent, rel)[-1]
        assert event == "spool-deleted"
        assert detail is not None and "age: deleted" in detail and "checked again" in detail
    assert agent.retention.apply(now + 2 * MONTH).retired == []  # each goes once


def test_the_running_agent_applies_it_paced(site: Site, make_agent: Callable[..., Agent]) -> None:
    rels = names(3)
    record(site, rels)
    agent = shipped_agent(site, make_agent, rels)
    later = time.time() + MONTH
    agent.run_once(later)
    assert in_spool(site, rels) == []
    record(site, names(1, first=5))  # found, shipped and old by the next pass only
    agent.discovery.reconcile(later, days=100_000)
    agent.run_once(later + 1)
    assert agent.retention.step(later + 2) is None  # not due before PASS_SECONDS
    assert (site.spool / names(1, first=5)[0]).exists()
    assert agent.retention.step(later + PASS_SECONDS + MONTH) is not None
    assert not (site.spool / names(1, first=5)[0]).exists()


def test_a_remote_copy_missing_or_altered_keeps_the_original_and_ships_it_again(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    rels = names(4)
    data = record(site, rels)
    agent = shipped_agent(site, make_agent, rels)
    truncated, altered, missing, good = (site.remote(r) for r in rels)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    body = bytearray(altered.read_bytes())
    body[-1] ^= 0xFF  # same size, one byte different: only the sha256 tells
    altered.write_bytes(bytes(body))
    missing.unlink()

    later = time.time() + MONTH
    report = agent.retention.apply(later)
    assert [r.path for r in report.retired] == [rels[3]]
    assert in_spool(site, rels) == rels[:3]
    assert good.exists()
    for rel, says in zip(rels[:3], ["bytes, not", "another sha256", "is missing"], strict=True):
        assert row(agent, rel).state == "pending", rel
        assert says in (row(agent, rel).reason or "")
        assert events(agent, rel)[-1][0] == "requeued"
    problem = agent.retention.problem
    assert problem is not None and "3 remote copies missing or different" in problem

    agent.run_once(later)  # shipped again, to the same names, in that pass
    for rel in rels[:3]:
        assert site.remote(rel).read_bytes() == data[rel]
        assert row(agent, rel).state == "done"
    report = agent.retention.apply(later + MONTH)
    assert sorted(r.path for r in report.retired) == rels[:3]
    assert agent.retention.problem is None


def test_the_destination_down_deletes_nothing(site: Site, make_agent: Callable[..., Agent]) -> None:
    rels = names(3)
    record(site, rels)
    agent = shipped_agent(site, make_agent, rels)
    site.dest.rename(site.root / "unmounted")  # the share's mount is gone
    report = agent.retention.apply(time.time() + MONTH)
    assert report.retired == [] and report.requeued == []
    assert report.stopped is not None and "does not exist" in report.stopped
    assert agent.destination.paused
    assert in_spool(site, rels) == rels
    assert {row(agent, r).state for r in rels} == {"done"}
    # Paused, the next pass does not even look.
    again = agent.retention.apply(time.time() + MONTH)
    assert again.retired == [] and again.stopped is not None and "paused" in again.stopped


def test_a_copy_gone_from_a_root_that_answers_is_shipped_again(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    """Missing means missing only once the destination answers its probe."""
    rels = names(1)
    record(site, rels)
    agent = shipped_agent(site, make_agent, rels)
    site.remote(rels[0]).unlink()
    report = agent.retention.apply(time.time() + MONTH)
    assert [rid for rid, _ in report.requeued] == [row(agent, rels[0]).id]
    assert not agent.destination.paused


def test_move_to_keeps_the_original_with_its_path(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    rels = names(2)
    data = record(site, rels)
    archive = site.root / "archive"
    agent = shipped_agent(
        site, make_agent, rels, retention={"spool_days": 30, "move_to": str(archive)}
    )
    mtimes = [(site.spool / r).stat().st_mtime_ns for r in rels]
    report = agent.retention.apply(time.time() + MONTH)
    assert len(report.retired) == 2
    assert in_spool(site, rels) == []
    for rel, mtime in zip(rels, mtimes, strict=True):
        assert (archive / rel).read_bytes() == data[rel]
        assert (archive / rel).stat().st_mtime_ns == mtime
        assert events(agent, rel)[-1][0] == "spool-moved"
    assert [p.name for p in archive.rglob(".*")] == []


def test_move_to_another_file_system_copies_then_removes(
    site: Site, make_agent: Callable[..., Agent], small_disk: Path
) -> None:
    rels = names(2)
    data = record(site, rels, seconds=0.25)
    agent = shipped_agent(
        site, make_agent, rels, retention={"spool_days": 30, "move_to": str(small_disk)}
    )
    report = agent.retention.apply(time.time() + MONTH)
    assert len(report.retired) == 2
    assert in_spool(site, rels) == []
    assert {r: (small_disk / r).read_bytes() for r in rels} == data
    assert [p.name for p in small_disk.rglob(".*")] == []


def test_folders_made_in_move_to_belong_to_its_owner(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    """Run as root, `recsync retention` leaves nothing in move_to the service cannot use."""
    if os.geteuid() != 0:
        pytest.skip("ownership only changes as root (CI runs as root)")
    archive = site.root / "archive"
    archive.mkdir()
    os.chown(archive, 4242, 4242)  # the service user's folder
    rels = names(1)
    record(site, rels)
    os.chown(site.spool / rels[0], 4343, 4343)  # asterisk's recording
    agent = shipped_agent(
        site, make_agent, rels, retention={"spool_days": 30, "move_to": str(archive)}
    )
    agent.retention.apply(time.time() + MONTH)
    for folder in ("2024", "2024/03", "2024/03/15"):
        st = (archive / folder).stat()
        assert (st.st_uid, st.st_gid) == (4242, 4242), folder
    st = (archive / rels[0]).stat()
    assert (st.st_uid, st.st_gid) == (4343, 4343)  # a rename keeps the owner


# --- SFTP to the test sshd ---------------------------------------------------------


def test_over_sftp_an_altered_copy_stays_and_the_rest_go(
    site: Site, sshd: Sshd, sftp_root: Path, make_agent: Callable[..., Agent]
) -> None:
    rels = names(3)
    data = record(site, rels)
    agent = shipped_agent(
        site, make_agent, rels, destination=sshd.destination(sftp_root, verify="sha256")
    )
    remote = {r: sftp_root / row(agent, r).remote_path for r in rels}
    body = bytearray(remote[rels[0]].read_bytes())
    body[100] ^= 0x01
    remote[rels[0]].write_bytes(bytes(body))
    report = agent.retention.apply(time.time() + MONTH - 1)
    assert sorted(r.path for r in report.retired) == rels[1:]
    assert in_spool(site, rels) == rels[:1]
    assert row(agent, rels[0]).state == "pending"
    agent.run_once(time.time() + MONTH)
    assert remote[rels[0]].read_bytes() == data[rels[0]]


def test_over_an_sftp_only_account_the_copy_is_read_back(
    site: Site, sftp_only_sshd: Sshd, make_agent: Callable[..., Agent]
) -> None:
    """No shell for sha256sum (ForceCommand internal-sftp): the check reads the copy back."""
    root = sftp_only_sshd.new_dir("retention-sftp-only")
    rels = names(2)
    record(site, rels)
    agent = shipped_agent(site, make_agent, rels, destination=sftp_only_sshd.destination(root))
    altered = root / row(agent, rels[0]).remote_path
    body = bytearray(altered.read_bytes())
    body[-1] ^= 0x01  # the size alone would not tell
    altered.write_bytes(bytes(body))
    report = agent.retention.apply(time.time() + MONTH)
    assert [r.path for r in report.retired] == [rels[1]]
    assert [rid for rid, _ in report.requeued] == [row(agent, rels[0]).id]
    assert agent.transport.features.sha256_by == "read-back"
    assert in_spool(site, rels) == rels[:1]


def test_over_sftp_the_server_down_deletes_nothing(
    site: Site, sshd: Sshd, sftp_root: Path, make_agent: Callable[..., Agent]
) -> None:
    rels = names(2)
    record(site, rels)
    agent = shipped_agent(site, make_agent, rels, destination=sshd.destination(sftp_root))
    sshd.stop()
    try:
        report = agent.retention.apply(time.time() + MONTH)
    finally:
        sshd.start()
    assert report.retired == [] and report.requeued == []
    assert report.stopped is not None
    assert in_spool(site, rels) == rels
    assert {row(agent, r).state for r in rels} == {"done"}


def test_over_s3_a_truncated_object_stays_and_the_rest_go(
    site: Site, rgw: RadosGateway, s3_bucket: str, make_agent: Callable[..., Agent]
) -> None:
    rels = names(3)
    data = record(site, rels)
    agent = shipped_agent(site, make_agent, rels, destination=s3_destination(site, rgw, s3_bucket))
    client = rgw.client(s3_bucket)
    try:
        key = f"pbx1/{row(agent, rels[0]).remote_path}"
        # Replaced behind the agent's back by a shorter object (a lifecycle rule, a person).
        assert client.request("PUT", key, body=data[rels[0]][:-10]).status == 200
        report = agent.retention.apply(time.time() + MONTH - 1)
        assert sorted(r.path for r in report.retired) == rels[1:]
        assert in_spool(site, rels) == rels[:1]
        assert row(agent, rels[0]).state == "pending"
        agent.run_once(time.time() + MONTH)
        assert client.request("GET", key).body == data[rels[0]]
    finally:
        client.close()


# --- the command -------------------------------------------------------------------


def test_retention_command_dry_run_then_for_real(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    rels = names(3)
    record(site, rels)
    # A tiny fraction of a day: "shipped more than 0.1 ms ago" holds for all of them.
    tables: dict[str, Any] = {
        "spool": {"backfill_days": 100_000},
        "retention": {"spool_days": 1e-9},
    }
    agent = shipped_agent(site, make_agent, rels, retention=tables["retention"])
    agent.store.holds.add("number", "+1 (800) 555-1234", now=time.time())  # every call: held
    config = site.write_config(**tables)
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(cli, ["--config", str(config), *args])
        assert result.exit_code == 0, result.output
        return result

    dry = json.loads(run("retention", "--dry-run", "--json").output)
    assert dry["removed"] == [] and dry["dry_run"]
    agent.store.holds.remove("number", "18005551234", now=time.time())
    dry = json.loads(run("retention", "--dry-run", "--json").output)
    assert sorted(r["path"] for r in dry["removed"]) == rels
    assert dry["freed_bytes"] == sum((site.spool / r).stat().st_size for r in rels)
    assert in_spool(site, rels) == rels  # a dry run changes nothing

    text = run("retention").output
    assert "age: 3 original(s)" in text and "removed" in text
    assert in_spool(site, rels) == []
    shown = run("show", rels[0]).output
    assert "spool-deleted" in shown and "checked again" in shown
    assert "3 original(s) out of the spool" in run("status").output
    status = json.loads(run("status", "--json").output)
    assert status["retention"]["removed"] == 3
    assert status["retention"]["removed_bytes"] > 0


def test_retention_command_refuses_when_off(site: Site) -> None:
    config = site.write_config()
    result = CliRunner().invoke(cli, ["--config", str(config), "retention"])
    assert result.exit_code == 1
    assert "retention is off" in result.output


def test_the_audit_trail_outlives_the_history_pruning(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    rels = names(1)
    record(site, rels)
    agent = shipped_agent(site, make_agent, rels)
    agent.retention.apply(time.time() + MONTH)
    agent.store.prune(time.time() + 10 * MONTH, now=time.time() + 10 * MONTH)
    assert [e for e, _ in events(agent, rels[0])] == ["spool-deleted"]  # "done" etc. pruned


def test_an_original_copied_back_to_play_it_is_not_shipped_again(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    rels = names(1)
    data = record(site, rels)
    archive = site.root / "archive"
    agent = shipped_agent(
        site, make_agent, rels, retention={"spool_days": 30, "move_to": str(archive)}
    )
    later = time.time() + MONTH
    agent.retention.apply(later)
    back = site.spool / rels[0]
    back.write_bytes((archive / rels[0]).read_bytes())  # cp -p: a new inode, same mtime
    mtime = (archive / rels[0]).stat().st_mtime_ns
    os.utime(back, ns=(mtime, mtime))
    agent.pipeline.observe(rels[0], later)
    assert row(agent, rels[0]).state == "done"
    assert row(agent, rels[0]).spool_removed_at is None
    assert events(agent, rels[0])[-1][0] == "spool-restored"
    assert site.remote(rels[0]).read_bytes() == data[rels[0]]
    # A hold keeps it where FreePBX can play it; without one the next pass moves it again.
    agent.store.holds.add("uniqueid", row(agent, rels[0]).uniqueid, now=later)
    assert agent.retention.apply(later + 1).retired == []
    assert back.exists()


def test_a_long_pass_of_the_running_agent_goes_on_in_batches(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    rels = names(5)
    record(site, rels)
    agent = shipped_agent(site, make_agent, rels)
    agent.retention.checks_per_pass = 2  # shipping gets its turn between batches
    later = time.time() + MONTH
    first = agent.retention.step(later)
    assert first is not None and first.more and len(first.retired) == 2
    assert agent.retention.step(later + 0.5) is None
    second = agent.retention.step(later + 1)
    assert second is not None and len(second.retired) == 2
    third = agent.retention.step(later + 2)
    assert third is not None and not third.more and len(third.retired) == 1
    assert agent.retention.next_pass_at == later + 2 + PASS_SECONDS
    assert in_spool(site, rels) == []
