"""SIGKILL at stage boundaries and at random moments: nothing lost, nothing shipped twice.

Four setups: a local destination (12 kills, 300 calls); what a PBX has, SFTP to a real
sshd with caller IDs from a real MariaDB (32 kills, 500 calls, some CDR rows never come);
object storage, a real Ceph RGW bucket (20 kills, 300 calls); and two destinations at
once, SFTP and a local archive, each checked alike (11 kills, 150 calls)."""

from __future__ import annotations

import hashlib
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
from tests.support.s3 import RadosGateway
from tests.support.sshd import Sshd
from tests.test_s3 import s3_destination

SEED = 20241126
DEADLINE = 120.0


class Folder:
    """A destination folder as the test reads it (local, or the sshd's root)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def shipped(self) -> dict[str, str]:
        """Shipped recording -> sha256 (temporaries left out)."""
        return {
            p.relative_to(self.root).as_posix(): sha(p)
            for p in self.root.rglob("*.wav")
            if not p.name.startswith(".")
        }

    def count(self) -> int:
        return sum(1 for p in self.root.rglob("*.wav") if not p.name.startswith("."))

    def leftovers(self) -> list[str]:
        return [p.name for p in self.root.rglob(".*")]

    def manifests(self) -> list[bytes]:
        return [p.read_bytes() for p in self.root.rglob("manifest.json")]


class Bucket:
    """The objects under a prefix of a bucket, as the test reads them."""

    def __init__(self, rgw: RadosGateway, bucket: str, prefix: str) -> None:
        self.client = rgw.client(bucket)
        self.prefix = prefix

    def _keys(self) -> list[str]:
        return [key for key, _ in self.client.list_keys(self.prefix)]

    def _get(self, key: str) -> bytes:
        answer = self.client.request("GET", key)
        assert answer.status == 200, (key, answer.status)
        return answer.body

    def shipped(self) -> dict[str, str]:
        return {
            key[len(self.prefix) :]: hashlib.sha256(self._get(key)).hexdigest()
            for key in self._keys()
            if key.endswith(".wav")
        }

    def count(self) -> int:
        return sum(1 for key in self._keys() if key.endswith(".wav"))

    def leftovers(self) -> list[str]:
        names = [key.rsplit("/", 1)[-1] for key in self._keys()]
        unfinished = [key for key, _ in self.client.list_uploads(self.prefix)]
        return [name for name in names if name.startswith(".")] + unfinished

    def manifests(self) -> list[bytes]:
        return [self._get(key) for key in self._keys() if key.endswith("/manifest.json")]


@dataclass
class Rig:
    """One setup to crash: where shipped files land, how many calls, which kills."""

    site: Site
    dest: Folder | Bucket
    recordings: int
    # (crash point, the n-th pass that kills): each run gets some work done, then dies there.
    stage_kills: list[tuple[str, int]]
    random_kills: int
    cdr_db: MariaDB | None = None
    no_cdr_row: frozenset[int] = frozenset()  # calls whose CDR row never comes
    also: tuple[Folder, ...] = ()  # more destinations, checked like `dest`

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


@pytest.fixture(params=["local", "sftp-mariadb", "s3", "two-destinations"])
def rig(request: pytest.FixtureRequest, site: Site) -> Rig:
    spool = {"backfill_days": 100_000}
    if request.param == "two-destinations":
        from tests.test_destinations import write_toml

        sshd_: Sshd = request.getfixturevalue("sshd")
        remote: Path = request.getfixturevalue("sftp_root")
        archive = site.root / "archive"
        archive.mkdir()
        data: dict[str, Any] = site.data(spool=spool)
        data["destination"] = {
            **sshd_.destination(remote),
            "archive": {"type": "local", "root": str(archive), "pages": True},
        }
        write_toml(site.config_path, data)
        points = ["claimed", "upload:before-rename", "uploaded", "done"]
        stage_kills = [(point, nth) for nth in (1, 12) for point in points]
        stage_kills += [("manifest:written", 1), ("manifest:written", 2)]
        return Rig(
            site,
            Folder(remote),
            recordings=150,
            stage_kills=stage_kills,
            random_kills=4,
            also=(Folder(archive),),
        )
    if request.param == "local":
        site.write_config(spool=spool)
        stage_kills = [("claimed", 1), ("upload:before-rename", 3), ("uploaded", 5)]
        stage_kills += [("claimed", 25), ("upload:before-rename", 25), ("uploaded", 25)]
        return Rig(site, Folder(site.dest), recordings=300, stage_kills=stage_kills, random_kills=5)
    if request.param == "s3":
        rgw: RadosGateway = request.getfixturevalue("rgw")
        bucket: str = request.getfixturevalue("s3_bucket")
        site.write_config(
            spool=spool, destination=s3_destination(site, rgw, bucket), index={"enabled": True}
        )
        points = ["staged", "claimed", "upload:sent", "uploaded", "done"]
        stage_kills = [(point, nth) for nth in (1, 5, 20) for point in points]
        stage_kills.append(("manifest:written", 1))  # a pass here ships all it can first
        objects = Bucket(rgw, bucket, "pbx1/")
        request.addfinalizer(objects.client.close)
        return Rig(
            site,
            objects,
            recordings=300,
            stage_kills=stage_kills,
            random_kills=8,
        )
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
        Folder(root),
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


def kill_after_progress(rig: Rig, rng: random.Random, total: int) -> None:
    """Start `recsync run`, let it ship a random number of files, SIGKILL it."""
    target = rig.dest.count() + rng.randint(1, 25)
    proc = subprocess.Popen(
        agent_command(rig.site, "--log-level", "warning", "run"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + DEADLINE
        while rig.dest.count() < min(target, total) and time.monotonic() < end:
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
    # The kills left work behind (with two destinations, the quicker one's crash points
    # may kill the process before the other has shipped any: the random kills wait on it).
    counts = [each.count() for each in (dest, *rig.also)]
    assert 0 < sum(counts) < len(expected) * len(counts)
    rng = random.Random(SEED)
    for _ in range(rig.random_kills):
        kill_after_progress(rig, rng, len(expected))
    expected |= rig.make_spool(range(total - later, total))
    spool_before = snapshot(site.spool)
    assert first_part.items() <= spool_before.items()  # the kills changed nothing in it
    # They ship, then the agent dies between writing one day's manifest and noting it.
    assert run_once(site, "manifest:written@1") == -signal.SIGKILL
    assert run_once(site) == 0

    for each in (dest, *rig.also):
        check_destination(rig, each, total, expected)
    for staging in (site.state / "staging", site.state / "destinations" / "archive" / "staging"):
        assert not staging.exists() or list(staging.iterdir()) == []
    # The spool is exactly as it was: nothing modified, renamed or deleted.
    assert snapshot(site.spool) == spool_before


def check_destination(
    rig: Rig, dest: Folder | Bucket, total: int, expected: dict[str, str]
) -> None:
    # Every recording exactly once, byte-identical; no -2 variants, no temporaries.
    shipped = dest.shipped()
    assert len(shipped) == total
    assert sorted(shipped.values()) == sorted(expected.values())
    assert dest.leftovers() == []
    # Manifests agree with the files, and carry each call's CDR row (or say it is missing).
    by_original, by_file = {}, {}
    for manifest in dest.manifests():
        for entry in json.loads(manifest)["recordings"]:
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
