"""SIGKILL at stage boundaries and at random moments: nothing lost, nothing shipped twice.

Two setups: a local destination (12 kills, 300 calls), and what a PBX has, SFTP to a real
sshd with caller IDs from a real MariaDB (32 kills, 500 calls, some CDR rows never come)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Site
from tests.support.cdr import cdr_row
from tests.support.files import sha, snapshot
from tests.support.mariadb import MariaDB
from tests.support.mixmonitor import write_recording
from tests.support.sshd import Sshd

SEED = 20241126
DEADLINE = 120.0


@dataclass
class Rig:
    """One setup to crash: where shipped files land, how many calls, which kills."""

    site: Site
    dest: Path
    recordings: int
    # (crash point, the n-th pass that kills): each run gets some work done, then dies there.
    stage_kills: list[tuple[str, int]]
    random_kills: int
    cdr_db: MariaDB | None = None
    no_cdr_row: frozenset[int] = frozenset()  # calls whose CDR row never comes

    def make_spool(self, numbers: range) -> dict[str, str]:
        """Finished recordings (and their CDR rows) over three day folders and the flat
        root; returns spool path -> sha256."""
        expected = {}
        for n in numbers:
            rel = recording_path(n)
            path = self.site.spool_file(rel)
            write_recording(path, seconds=0.25 + (n % 7) / 10, seed=n)
            expected[rel] = sha(path)
            if self.cdr_db is not None and n not in self.no_cdr_row:
                self.cdr_db.insert_cdr(call_row(n))
        return expected


def recording_path(n: int) -> str:
    folder = "" if n % 10 == 0 else f"2024/03/{call_time(n):%d}/"
    return f"{folder}in-600-{caller(n)}-{call_time(n):%Y%m%d-%H%M%S}-{uniqueid(n)}.wav"


def call_time(n: int) -> datetime:
    return datetime(2024, 3, 13 + n % 3, 10, n // 60 % 60, n % 60)


def caller(n: int) -> str:
    return f"21255{n:05d}"


def uniqueid(n: int) -> str:
    return f"1710497702.{n}"


def call_row(n: int) -> dict[str, Any]:
    return cdr_row(
        uniqueid(n),
        at=call_time(n),
        recordingfile=recording_path(n).rsplit("/", 1)[-1],
        src=caller(n),
        dst="600",
        cnum=caller(n),
        cnam=f"Caller {n}",
        clid=f'"Caller {n}" <{caller(n)}>',
    )


@pytest.fixture(params=["local", "sftp-mariadb"])
def rig(request: pytest.FixtureRequest, site: Site) -> Rig:
    spool = {"backfill_days": 100_000}
    if request.param == "local":
        site.write_config(spool=spool)
        stage_kills = [("claimed", 1), ("upload:before-rename", 3), ("uploaded", 5)]
        stage_kills += [("claimed", 25), ("upload:before-rename", 25), ("uploaded", 25)]
        return Rig(site, site.dest, recordings=300, stage_kills=stage_kills, random_kills=5)
    # What a PBX has: SFTP to a real sshd, caller IDs from a real MariaDB (FreePBX schema),
    # pages on; every stage boundary at the start, in the middle and late in a pass.
    sshd: Sshd = request.getfixturevalue("sshd")
    root: Path = request.getfixturevalue("sftp_root")
    cdr_db: MariaDB = request.getfixturevalue("cdr_db")
    cdr_db.create_user("recsync", "s3cret")
    secret = site.root / "cdr-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    site.write_config(
        spool=spool,
        destination=sshd.destination(root),
        index={"enabled": True},
        cdr={
            "type": "mysql",
            "socket": cdr_db.socket,
            "user": "recsync",
            "password_file": str(secret),
            "wait_seconds": 2,
        },
    )
    points = ["staged", "claimed", "upload:before-rename", "uploaded", "done"]
    stage_kills = [(point, nth) for nth in (1, 9, 40) for point in points]
    stage_kills += [("manifest:written", nth) for nth in (1, 2, 3)]  # 3 days: a few per run
    return Rig(
        site,
        root,
        recordings=500,
        stage_kills=stage_kills,
        random_kills=13,
        cdr_db=cdr_db,
        no_cdr_row=frozenset(range(7, 500, 50)),
    )


def agent_command(site: Site, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--config", str(site.config_path), *args]


def run_once(site: Site, crash_at: str | None = None) -> int:
    env = dict(os.environ)
    if crash_at:
        env["RECSYNC_CRASH_AT"] = crash_at
    done = subprocess.run(
        agent_command(site, "--log-level", "warning", "run", "--once"),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr.decode()
    return done.returncode


def shipped_recordings(dest: Path) -> dict[str, str]:
    return {
        p.relative_to(dest).as_posix(): sha(p)
        for p in dest.rglob("*.wav")
        if not p.name.startswith(".")
    }


def kill_after_progress(rig: Rig, rng: random.Random, total: int) -> None:
    """Start `recsync run`, let it ship a random number of files, SIGKILL it."""
    target = len(shipped_recordings(rig.dest)) + rng.randint(1, 25)
    proc = subprocess.Popen(
        agent_command(rig.site, "--log-level", "warning", "run"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + DEADLINE
        while len(shipped_recordings(rig.dest)) < min(target, total) and time.monotonic() < end:
            time.sleep(rng.uniform(0.001, 0.01))
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigkill_anywhere_loses_nothing_and_ships_nothing_twice(rig: Rig) -> None:
    site, dest, total = rig.site, rig.dest, rig.recordings
    later = total // 6  # calls that arrive after the first kills
    expected = rig.make_spool(range(total - later))
    first_part = snapshot(site.spool)

    for point, nth in rig.stage_kills:
        assert run_once(site, f"{point}@{nth}") == -signal.SIGKILL, f"{point}@{nth} not reached"
    assert 0 < len(shipped_recordings(dest)) < len(expected)  # the kills left work behind
    rng = random.Random(SEED)
    for _ in range(rig.random_kills):
        kill_after_progress(rig, rng, len(expected))
    expected |= rig.make_spool(range(total - later, total))
    spool_before = snapshot(site.spool)
    assert first_part.items() <= spool_before.items()  # the kills changed nothing in it
    # They ship, then the agent dies between writing one day's manifest and noting it.
    assert run_once(site, "manifest:written@1") == -signal.SIGKILL
    assert run_once(site) == 0

    # Every recording exactly once, byte-identical; no -2 variants, no temporaries.
    shipped = shipped_recordings(dest)
    assert len(shipped) == total
    assert sorted(shipped.values()) == sorted(expected.values())
    leftovers = [p.name for p in dest.rglob(".*")]
    assert leftovers == []
    staging = site.state / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    # Manifests agree with the files, and carry each call's CDR row (or say it is missing).
    by_original, by_file = {}, {}
    for manifest in dest.rglob("manifest.json"):
        for entry in json.loads(manifest.read_text())["recordings"]:
            assert entry["file"] not in by_file
            by_file[entry["file"]] = entry["sha256"]
            by_original[entry["original"]] = entry["sha256"]
            if rig.cdr_db is not None:
                n = int(entry["original"].rsplit(".", 2)[1])
                found = n not in rig.no_cdr_row
                assert entry["cdr"] == ("found" if found else "missing"), entry
                assert entry["caller_name"] == (f"Caller {n}" if found else None), entry
    assert by_file == shipped
    assert by_original == expected
    # The spool is exactly as it was: nothing modified, renamed or deleted.
    assert snapshot(site.spool) == spool_before
