"""SIGKILL at stage boundaries and at random moments: nothing lost, nothing shipped twice."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Site
from tests.support.mixmonitor import write_recording

RECORDINGS = 300
SEED = 20241126
DEADLINE = 60.0
# (crash point, the n-th pass that kills): each run gets some work done, then dies there.
STAGE_KILLS = [
    ("claimed", 1),
    ("upload:before-rename", 3),
    ("uploaded", 5),
    ("claimed", 25),
    ("upload:before-rename", 25),
    ("uploaded", 25),
]
RANDOM_KILLS = 5


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    return {
        p.relative_to(folder).as_posix(): (digest(p), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in folder.rglob("*")
        if p.is_file()
    }


def make_spool(site: Site, numbers: range) -> dict[str, str]:
    """Finished recordings over three day folders and the flat root;
    returns spool path -> sha256."""
    expected = {}
    for n in numbers:
        day = 13 + n % 3
        name = (
            f"in-600-21255{n:05d}-202403{day}-10{n // 60 % 60:02d}{n % 60:02d}-1710497702.{n}.wav"
        )
        folder = "" if n % 10 == 0 else f"2024/03/{day}/"
        path = site.spool_file(folder + name)
        write_recording(path, seconds=0.25 + (n % 7) / 10, seed=n)
        expected[folder + name] = digest(path)
    return expected


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


def shipped_recordings(site: Site) -> dict[str, str]:
    return {
        p.relative_to(site.dest).as_posix(): digest(p)
        for p in site.dest.rglob("*.wav")
        if not p.name.startswith(".")
    }


def kill_after_progress(site: Site, rng: random.Random, total: int) -> None:
    """Start `recsync run`, let it ship a random number of files, SIGKILL it."""
    target = len(shipped_recordings(site)) + rng.randint(1, 25)
    proc = subprocess.Popen(
        agent_command(site, "--log-level", "warning", "run"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + DEADLINE
        while len(shipped_recordings(site)) < min(target, total) and time.monotonic() < end:
            time.sleep(rng.uniform(0.001, 0.01))
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigkill_anywhere_loses_nothing_and_ships_nothing_twice(site: Site) -> None:
    site.write_config(spool={"backfill_days": 100_000})
    later = RECORDINGS // 6  # calls that arrive after the first kills
    expected = make_spool(site, range(RECORDINGS - later))
    first_part = snapshot(site.spool)

    for point, nth in STAGE_KILLS:
        assert run_once(site, f"{point}@{nth}") == -signal.SIGKILL, f"{point}@{nth} not reached"
    assert 0 < len(shipped_recordings(site)) < len(expected)  # the kills left work behind
    rng = random.Random(SEED)
    for _ in range(RANDOM_KILLS):
        kill_after_progress(site, rng, len(expected))
    expected |= make_spool(site, range(RECORDINGS - later, RECORDINGS))
    spool_before = snapshot(site.spool)
    assert first_part.items() <= spool_before.items()  # the kills changed nothing in it
    # They ship, then the agent dies between writing one day's manifest and noting it.
    assert run_once(site, "manifest:written@1") == -signal.SIGKILL
    assert run_once(site) == 0

    # Every recording exactly once, byte-identical; no -2 variants, no temporaries.
    shipped = shipped_recordings(site)
    assert len(shipped) == RECORDINGS
    assert sorted(shipped.values()) == sorted(expected.values())
    leftovers = [p.name for p in site.dest.rglob(".*")]
    assert leftovers == []
    staging = site.state / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    # Manifests agree with the files.
    by_original, by_file = {}, {}
    for manifest in site.dest.rglob("manifest.json"):
        for entry in json.loads(manifest.read_text())["recordings"]:
            assert entry["file"] not in by_file
            by_file[entry["file"]] = entry["sha256"]
            by_original[entry["original"]] = entry["sha256"]
    assert by_file == shipped
    assert by_original == expected
    # The spool is exactly as it was: nothing modified, renamed or deleted.
    assert snapshot(site.spool) == spool_before
