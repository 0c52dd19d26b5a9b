"""A damaged state database: the agent refuses to run and says what to do, and
`recsync state rebuild` makes a new one from the spool and the destination's manifests,
after which nothing already shipped is shipped again and nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.lock import exclusive
from tests.conftest import Site
from tests.support.cdr import SqliteCdrFile, cdr_row
from tests.support.mixmonitor import write_recording
from tests.support.sshd import Sshd
from tests.test_destinations import write_toml

DEADLINE = 60.0


def call_name(n: int) -> tuple[str, datetime, str]:
    """(spool path, start, uniqueid) of call n, over two days."""
    at = datetime(2024, 3, 14 + n % 2, 9, n, 0)
    uid = f"{int(at.timestamp())}.{n}"
    return f"{at:%Y/%m/%d}/out-0612345{n:03d}-201-{at:%Y%m%d-%H%M%S}-{uid}.wav", at, uid


def record(site: Site, cdr: SqliteCdrFile, numbers: range) -> None:
    for n in numbers:
        rel, at, uid = call_name(n)
        write_recording(site.spool_file(rel), seconds=0.3, seed=n)
        if n % 4:  # every fourth call never gets a CDR row
            name = rel.rsplit("/", 1)[-1]
            cdr.insert(cdr_row(uid, at=at, recordingfile=name, cnam=f"Agent {n}", cnum="201"))


def recsync(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(site.config_path), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def manifests(root: Path) -> dict[str, dict[str, Any]]:
    """Original spool path -> manifest entry, over every day at the destination."""
    found = {}
    for path in root.rglob("manifest.json"):
        for entry in json.loads(path.read_text())["recordings"]:
            found[entry["original"]] = entry
    return found


def remote_files(root: Path) -> dict[str, tuple[int, int]]:
    """Shipped recordings -> (inode, mtime): a file uploaded again gets a new inode."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in root.rglob("*.wav")
    }


def damage(db: Path, how: str) -> None:
    with db.open("r+b") as f:
        if how == "header":
            f.write(b"\0" * 100)  # "file is not a database"
        else:  # garbage over a b-tree page: quick_check finds it
            f.seek(4096 + 8)
            f.write(os.urandom(2048))


@pytest.fixture
def shipped_site(site: Site, sshd: Sshd, sftp_root: Path) -> tuple[Site, Path, SqliteCdrFile]:
    """20 calls shipped by SFTP with caller IDs and pages, then 3 originals deleted from
    the spool (FreePBX's retention): what a rebuild starts from."""
    cdr = SqliteCdrFile(site.root / "master.db")
    site.write_config(
        spool={"backfill_days": 100_000},
        destination=sshd.destination(sftp_root),
        cdr={"type": "sqlite", "path": str(cdr.path), "wait_seconds": 0.2},
        index={"enabled": True},
    )
    record(site, cdr, range(20))
    first = recsync(site, "run", "--once")
    assert first.returncode == 0, first.stderr
    for n in (0, 1, 2):
        (site.spool / call_name(n)[0]).unlink()
    return site, sftp_root, cdr


@pytest.mark.parametrize("how", ["header", "page"])
def test_a_damaged_database_is_refused_with_what_to_do(
    shipped_site: tuple[Site, Path, SqliteCdrFile], how: str
) -> None:
    site, root, _ = shipped_site
    before = remote_files(root)
    damage(site.state / "state.db", how)
    # `run` checks the whole file; the read-only commands skip that for speed and see
    # only damage in what they read (here the header).
    for args in (["run", "--once"], ["status"]) if how == "header" else (["run", "--once"],):
        refused = recsync(site, *args)
        assert refused.returncode == 1, refused.stdout
        assert "is damaged" in refused.stderr
        assert "recsync state rebuild" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert remote_files(root) == before  # nothing shipped or touched meanwhile


def test_rebuild_restores_what_was_shipped_and_ships_only_what_is_new(
    shipped_site: tuple[Site, Path, SqliteCdrFile],
) -> None:
    site, root, cdr = shipped_site
    shipped_before, entries_before = remote_files(root), manifests(root)
    assert len(entries_before) == 20
    damage(site.state / "state.db", "header")
    record(site, cdr, range(20, 24))  # calls that came while the agent was down
    spool_before = {p: p.stat().st_mtime_ns for p in site.spool.rglob("*.wav")}

    rebuilt = recsync(site, "state", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "from 2 day manifest(s): 20 shipped recording(s), 17 of them still in the spool" in (
        rebuilt.stdout
    )
    kept = list(site.state.glob("state.db.damaged-*"))
    assert len(kept) == 1 and str(kept[0]) in rebuilt.stdout
    assert kept[0].read_bytes()[:100] == b"\0" * 100  # the damaged file, as it was

    again = recsync(site, "run", "--once")
    assert again.returncode == 0, again.stderr
    shipped = remote_files(root)
    # The 20 already there were not uploaded again (same inode and mtime), the 4 new came.
    assert {k: v for k, v in shipped.items() if k in shipped_before} == shipped_before
    assert len(shipped) == 24
    assert not [p for p in root.rglob("*-2.wav")]
    entries = manifests(root)
    # Every restored entry (the 3 gone from the spool too) is in the republished manifests,
    # field for field: caller IDs, the missing CDRs, sizes and hashes.
    assert {k: entries[k] for k in entries_before} == entries_before
    assert sorted(entries) == sorted(call_name(n)[0] for n in range(24))
    assert {p: p.stat().st_mtime_ns for p in site.spool.rglob("*.wav")} == spool_before

    status = json.loads(recsync(site, "status", "--json").stdout)
    assert status["counts"]["done"] == 24


def test_a_healthy_database_is_only_replaced_with_force(
    shipped_site: tuple[Site, Path, SqliteCdrFile],
) -> None:
    site, _, _ = shipped_site
    refused = recsync(site, "state", "rebuild")
    assert refused.returncode == 1
    assert "is healthy" in refused.stderr and "--force" in refused.stderr
    assert list(site.state.glob("state.db.damaged-*")) == []

    forced = recsync(site, "state", "rebuild", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "20 shipped recording(s)" in forced.stdout


def test_rebuild_waits_for_the_agent_to_stop(
    shipped_site: tuple[Site, Path, SqliteCdrFile],
) -> None:
    site, _, _ = shipped_site
    damage(site.state / "state.db", "header")
    with exclusive(site.state / "state.db"):  # as a running agent holds it
        refused = recsync(site, "state", "rebuild")
    assert refused.returncode == 1
    assert "another recsync process is running" in refused.stderr
    assert list(site.state.glob("state.db.damaged-*")) == []


def test_a_call_shipped_with_the_cdr_off_stays_off_through_a_rebuild(site: Site) -> None:
    """`"cdr": "off"` (never looked for) is not turned into "missing" (looked for, and a
    late-CDR sweep would keep asking) by a rebuild from the manifests."""
    site.write_config(spool={"backfill_days": 100_000}, cdr={"type": "none"})
    rel, _at, _uid = call_name(5)
    write_recording(site.spool_file(rel), seconds=0.3, seed=5)
    assert recsync(site, "run", "--once").returncode == 0
    assert manifests(site.dest)[rel]["cdr"] == "off"
    damage(site.state / "state.db", "header")
    rebuilt = recsync(site, "state", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert recsync(site, "index", "rebuild").returncode == 0
    assert manifests(site.dest)[rel]["cdr"] == "off"


# --- several destinations: --destination rebuilds that one's database --------------------


def test_rebuild_of_a_named_destination_leaves_the_others_alone(
    site: Site, sshd: Sshd, sftp_root: Path
) -> None:
    data: dict[str, Any] = site.data(spool={"backfill_days": 100_000})
    data["destination"]["archive"] = sshd.destination(sftp_root)
    write_toml(site.config_path, data)  # the first local, the archive by SFTP
    for n in range(6):
        write_recording(site.spool_file(call_name(n)[0]), seconds=0.3, seed=n)
    first = recsync(site, "run", "--once")
    assert first.returncode == 0, first.stderr
    own = site.state / "destinations" / "archive" / "state.db"
    default_before = (site.state / "state.db").read_bytes()
    shipped_before = remote_files(sftp_root)
    assert len(shipped_before) == 6
    damage(own, "header")

    unknown = recsync(site, "state", "rebuild", "--destination", "nas")
    assert unknown.returncode == 1
    assert "no destination named 'nas' (configured: default, archive)" in unknown.stderr
    healthy = recsync(site, "state", "rebuild")  # the first destination's: healthy
    assert healthy.returncode == 1 and f"{site.state / 'state.db'} is healthy" in healthy.stderr

    rebuilt = recsync(site, "state", "rebuild", "--destination", "archive")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuilt {own} from 2 day manifest(s): 6 shipped recording(s)" in rebuilt.stdout
    assert len(list(own.parent.glob("state.db.damaged-*"))) == 1
    assert list(site.state.glob("state.db.damaged-*")) == []
    assert (site.state / "state.db").read_bytes() == default_before

    again = recsync(site, "run", "--once")
    assert again.returncode == 0, again.stderr
    assert remote_files(sftp_root) == shipped_before  # nothing uploaded again
    status = json.loads(recsync(site, "status", "--json").stdout)
    assert status["destinations"]["archive"]["counts"]["done"] == 6
