"""The whole agent shipping over SFTP to a real sshd, through the faults of DESIGN.md:
an untrusted host key, the server gone mid-run, permission denied, a full disk.
Nothing is lost, nothing arrives twice, and delivery resumes by itself."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.daemon import Agent
from agent.transport import open_transport
from agent.transport import sftp as sftp_module
from tests.conftest import Site
from tests.support.disks import resize
from tests.support.mixmonitor import write_recording
from tests.support.sshd import Sshd, TcpProxy

DAY = "2024/03/15"


def names(count: int) -> list[str]:
    return [
        f"{DAY}/out-18005551234-1001-20240315-1015{n:02d}-1710497702.{n}.wav" for n in range(count)
    ]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(site: Site, count: int) -> list[str]:
    rels = names(count)
    for n, rel in enumerate(rels):
        write_recording(site.spool_file(rel), seconds=1, seed=n)
    return rels


def sftp_agent(
    site: Site, sshd: Sshd, root: Path, make_agent: Callable[..., Agent], **destination: Any
) -> Agent:
    config = site.config(
        spool={"backfill_days": 100_000}, destination=sshd.destination(root, **destination)
    )
    return make_agent(config, transport=open_transport(config.destination))


def run_past_every_backoff(agent: Agent, now: float, passes: int = 100) -> None:
    """Passes an hour apart (past every retry backoff) until nothing is due."""
    later = now
    while agent.run_once(later) is not None and later < now + passes * 3600:
        later += 3600


def delivered(site: Site, root: Path, rels: list[str]) -> None:
    """Every recording exactly once under root, byte-identical, no temporaries left."""
    shipped = sorted(p for p in root.rglob("*.wav"))
    assert len(shipped) == len(rels)
    assert sorted(sha(p) for p in shipped) == sorted(sha(site.spool / r) for r in rels)
    assert [p.name for p in root.rglob(".recsync-*")] == []
    manifest = json.loads((root / DAY / "manifest.json").read_text())
    assert sorted(e["original"] for e in manifest["recordings"]) == sorted(rels)


def test_ships_over_sftp_with_manifest(
    site: Site, sshd: Sshd, sftp_root: Path, make_agent: Callable[..., Agent]
) -> None:
    rels = record(site, 5)
    sftp_agent(site, sshd, sftp_root, make_agent).run_until_idle()
    delivered(site, sftp_root, rels)
    assert oct((sftp_root / DAY).stat().st_mode & 0o777) == oct(0o755)
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in sftp_root.rglob("*.wav"))


def test_untrusted_host_key_pauses_until_trust_host(
    site: Site, sshd: Sshd, sftp_root: Path, make_agent: Callable[..., Agent]
) -> None:
    rels = record(site, 3)
    known_hosts = site.root / "known_hosts"  # empty: nothing trusted yet
    agent = sftp_agent(site, sshd, sftp_root, make_agent, known_hosts=str(known_hosts))
    agent.run_until_idle()
    assert (
        agent.destination.paused_reason is not None
        and "trust-host" in agent.destination.paused_reason
    )
    assert list(sftp_root.iterdir()) == []
    assert {agent.store.by_stem(r[:-4]).state for r in rels} == {"pending"}  # nothing lost

    config = site.write_config(
        spool={"backfill_days": 100_000},
        destination=sshd.destination(sftp_root, known_hosts=str(known_hosts)),
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "trust-host", "--yes"])
    assert result.exit_code == 0, result.output
    assert "SHA256:" in result.output
    assert agent.destination.paused_until is not None
    agent.run_once(agent.destination.paused_until)  # the next probe finds the key trusted
    delivered(site, sftp_root, rels)


def test_server_gone_mid_run_then_back(
    site: Site, sshd: Sshd, sftp_root: Path, make_agent: Callable[..., Agent]
) -> None:
    rels = record(site, 6)
    agent = sftp_agent(site, sshd, sftp_root, make_agent)
    now = time.time()
    agent.start(now)
    sshd.stop()
    try:
        agent.run_once(now)
        states = {agent.store.by_stem(r[:-4]).state for r in rels}
        assert states <= {"failed", "pending"}  # retried later, not lost
    finally:
        sshd.start()
    run_past_every_backoff(agent, now)
    delivered(site, sftp_root, rels)


def test_connections_cut_mid_file_lose_nothing_and_leave_no_temporaries(
    site: Site,
    sshd: Sshd,
    sftp_root: Path,
    make_agent: Callable[..., Agent],
    tcp_proxy: Callable[..., TcpProxy],
) -> None:
    rels = names(8)
    for n, rel in enumerate(rels):
        write_recording(site.spool_file(rel), seconds=20, seed=n)  # 320 KB each
    proxy = tcp_proxy(sshd.port)
    known_hosts = sshd.write_known_hosts(site.root / "known_hosts", port=proxy.port)
    agent = sftp_agent(
        site, sshd, sftp_root, make_agent, port=proxy.port, known_hosts=str(known_hosts)
    )
    proxy.cut_after(700_000)  # every connection dies partway through its third file
    now = time.time()
    agent.start(now)
    run_past_every_backoff(agent, now)
    assert proxy.cuts >= 2
    delivered(site, sftp_root, rels)


def test_permission_denied_on_the_root_pauses_until_fixed(
    site: Site, unprivileged_sshd: Sshd, make_agent: Callable[..., Agent]
) -> None:
    root = unprivileged_sshd.new_dir("readonly-root")
    root.chmod(0o555)
    rels = record(site, 2)
    agent = sftp_agent(site, unprivileged_sshd, root, make_agent)
    agent.run_until_idle()
    assert (
        agent.destination.paused_reason is not None
        and "ermission" in agent.destination.paused_reason
    )
    root.chmod(0o755)
    assert agent.destination.paused_until is not None
    agent.run_once(agent.destination.paused_until)
    delivered(site, root, rels)


def test_remote_disk_that_fills_up_pauses_until_space_returns(
    site: Site, sshd: Sshd, small_disk: Path, make_agent: Callable[..., Agent]
) -> None:
    """A real 1 MiB filesystem on the webserver, 1.9 MB of calls to ship."""
    rels = names(6)
    for n, rel in enumerate(rels):
        write_recording(site.spool_file(rel), seconds=20, seed=n)  # 320 KB each
    agent = sftp_agent(site, sshd, small_disk, make_agent)
    agent.run_until_idle()
    assert (
        agent.destination.paused_reason is not None
        and "disk full" in agent.destination.paused_reason
    )
    arrived = list(small_disk.rglob("*.wav"))
    assert 0 < len(arrived) < len(rels)
    assert [p.name for p in small_disk.rglob(".recsync-*")] == []  # no half-written file
    states = {agent.store.by_stem(r[:-4]).state for r in rels}
    assert states <= {"done", "pending", "failed"}  # nothing quarantined or given up

    resize(small_disk, 8 << 20)  # the operator makes room
    assert agent.destination.paused_until is not None
    agent.run_once(agent.destination.paused_until)
    agent.run_until_idle()
    delivered(site, small_disk, rels)


def test_full_remote_disk_pauses_until_space_returns(
    site: Site,
    sshd: Sshd,
    sftp_root: Path,
    make_agent: Callable[..., Agent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rels = record(site, 2)
    real = sftp_module.disk_space

    async def full(sftp: Any, path: str) -> sftp_module.Space | None:
        return sftp_module.Space(0, 0.5, False)  # OpenSSH says only "failure" on ENOSPC

    monkeypatch.setattr(sftp_module, "disk_space", full)
    agent = sftp_agent(site, sshd, sftp_root, make_agent)
    agent.run_until_idle()
    assert (
        agent.destination.paused_reason is not None
        and "disk full" in agent.destination.paused_reason
    )
    monkeypatch.setattr(sftp_module, "disk_space", real)
    assert agent.destination.paused_until is not None
    agent.run_once(agent.destination.paused_until)
    delivered(site, sftp_root, rels)
