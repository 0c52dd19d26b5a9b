"""SIGKILL in the middle of retention passes, at the crash points around the remote check
and the removal: every recording still exists in at least one place (the spool, move_to,
and always the destination), and once a pass runs to its end the state agrees with disk.

Three passes to cut: the age rule deleting, the age rule moving to another file system
(a tmpfs: copy, check, rename, unlink), and a low-disk prune of a spool on a tmpfs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Site
from tests.support.files import sha
from tests.support.mixmonitor import write_recording

COUNT = 20
TIMEOUT = 120.0


def rels() -> list[str]:
    days = [13 + n % 3 for n in range(COUNT)]
    return [
        f"2024/03/{d}/in-600-21255{n:05d}-202403{d}-1000{n:02d}-1710497702.{n}.wav"
        for n, d in enumerate(days)
    ]


def recsync(config: Path, *args: str, crash_at: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "RECSYNC_CRASH_AT"}
    if crash_at is not None:
        env["RECSYNC_CRASH_AT"] = crash_at
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def rows(site: Site, under: str = "") -> list[tuple[Any, ...]]:
    """The rows of the state database `under` the state folder (another destination's)."""
    conn = sqlite3.connect(f"file:{site.state / under / 'state.db'}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT path, remote_path, state, spool_removed_at FROM recordings ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


class Pass:
    """One setup: where the spool is, where moved originals go, its retention table."""

    def __init__(self, spool: Path, move_to: Path | None, retention: dict[str, Any]) -> None:
        self.spool, self.move_to, self.retention = spool, move_to, retention


@pytest.fixture(params=["delete", "move", "prune"])
def setup(request: pytest.FixtureRequest, site: Site) -> Pass:
    if request.param == "delete":
        return Pass(site.spool, None, {"spool_days": 1e-9})
    disk: Path = request.getfixturevalue("small_disk")
    if request.param == "move":
        return Pass(site.spool, disk, {"spool_days": 1e-9, "move_to": str(disk)})
    return Pass(disk, None, {"min_free_percent": 80, "on_low_disk": "prune"})


KILLS = [
    ("retention:verified", 1),
    ("retention:removed", 1),
    ("retention:copied", 1),
    ("retention:verified", 3),
    ("retention:removed", 2),
    ("retention:copied", 2),
    ("retention:removed", 4),
]


def test_sigkill_mid_pass_loses_nothing(site: Site, setup: Pass) -> None:
    originals = {}
    for n, rel in enumerate(rels()):
        path = setup.spool / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_recording(path, seconds=2, seed=n)
        originals[rel] = sha(path)
    spool = {"path": str(setup.spool), "backfill_days": 100_000}
    assert recsync(site.write_config(spool=spool), "run", "--once") == 0  # shipped, kept
    assert {state for _, _, state, _ in rows(site)} == {"done"}
    remote = {path: site.dest / r for path, r, _, _ in rows(site)}
    config = site.write_config(spool=spool, retention=setup.retention)

    def everything_somewhere() -> None:
        for rel, digest in originals.items():
            assert sha(remote[rel]) == digest, rel  # the destination's copy is never touched
            places = [setup.spool / rel] + ([setup.move_to / rel] if setup.move_to else [])
            if setup.move_to is not None:  # moved originals: here or there, whole
                assert digest in {sha(p) for p in places if p.exists()}, rel

    killed = 0
    for point, nth in KILLS:
        if point == "retention:copied" and setup.move_to is None:
            continue
        killed += recsync(config, "retention", crash_at=f"{point}@{nth}") != 0
        everything_somewhere()
    assert killed >= 3  # the passes really were cut

    assert recsync(config, "retention") == 0  # a pass to its end
    everything_somewhere()
    removed = 0
    for path, _, state, removed_at in rows(site):
        assert state == "done"
        assert (setup.spool / path).exists() == (removed_at is None), path  # state = disk
        removed += removed_at is not None
    if setup.retention.get("spool_days"):
        assert removed == COUNT
    else:
        assert 0 < removed < COUNT
        st = os.statvfs(setup.spool)
        assert 100 * st.f_bavail / st.f_blocks >= 80
    for folder in filter(None, [setup.spool, setup.move_to]):
        assert [p.name for p in folder.rglob(".*")] == []  # no temporaries left behind


def test_sigkill_mid_pass_with_two_destinations_loses_nothing(site: Site) -> None:
    """The same cuts with a second destination whose copy of one call went bad after it
    shipped: each pass reads every destination's copy again, so that original never
    leaves the spool until the archive has shipped it whole again; the rest go."""
    from tests.test_destinations import write_toml

    originals = {}
    for n, rel in enumerate(rels()):
        path = site.spool_file(rel)
        write_recording(path, seconds=2, seed=n)
        originals[rel] = sha(path)
    archive = site.root / "archive"
    archive.mkdir()
    data: dict[str, Any] = site.data(spool={"backfill_days": 100_000})
    data["destination"]["archive"] = {"type": "local", "root": str(archive)}
    config = write_toml(site.config_path, data)
    assert recsync(config, "run", "--once") == 0  # shipped to both, kept
    remote = {path: site.dest / r for path, r, _, _ in rows(site)}
    archived = {path: archive / r for path, r, _, _ in rows(site, "destinations/archive/")}
    bad = rels()[5]
    archived[bad].write_bytes(b"RIFF")
    data["retention"] = {"spool_days": 1e-9}
    write_toml(site.config_path, data)

    def everything_somewhere() -> None:
        for rel, digest in originals.items():
            assert sha(remote[rel]) == digest, rel  # the copies are never touched
            if rel != bad:
                assert sha(archived[rel]) == digest, rel
        assert sha(site.spool / bad) == originals[bad]  # its only whole copy but one

    killed = 0
    for point, nth in KILLS:
        if point != "retention:copied":
            killed += recsync(config, "retention", crash_at=f"{point}@{nth}") != 0
            everything_somewhere()
    assert killed >= 3
    assert recsync(config, "retention") == 0  # a pass to its end
    everything_somewhere()
    in_spool = {path for path, _, _, removed_at in rows(site) if removed_at is None}
    assert in_spool == {bad} == {p for p in originals if (site.spool / p).exists()}
    archive_states = {path: state for path, _, state, _ in rows(site, "destinations/archive/")}
    assert archive_states[bad] == "pending" and set(archive_states.values()) == {
        "pending",
        "done",
    }

    assert recsync(config, "run", "--once") == 0  # the archive ships it again
    assert sha(archived[bad]) == originals[bad]
    assert recsync(config, "retention") == 0  # (run's own pass may come before the archive's)
    assert not (site.spool / bad).exists()
