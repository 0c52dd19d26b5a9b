"""Faults of the PBX's own side (issue 9): a full local disk while staging, and the state
database shared with the CLI (a long read transaction, a held write lock)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mutagen.wave
import pytest

from agent.errors import TransientError
from agent.media import prepare as prepare_module
from agent.pipeline import RETRY_MAX_SECONDS
from tests.conftest import Site
from tests.support.daemon import recsync
from tests.support.mixmonitor import write_recording

DAY = "2024/03/15"
DISK_BYTES = 1 << 20  # the small disk the staging folder lives on
SMALL_SECONDS = 1  # 16 kB: fits beside the filler
BIG_SECONDS = 12  # 192 kB: does not, but fits once the filler is gone
FREE_BESIDE_FILLER = 96 * 1024


def name(n: int) -> str:
    return f"in-600-21255501{n:02d}-20240315-1015{n:02d}-1710497702.{n}.wav"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    return {
        p.relative_to(folder).as_posix(): (sha(p), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in folder.rglob("*")
        if p.is_file()
    }


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), unmounted at the end whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the staging folder needs root (CI runs as root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def agent_log() -> Iterator[list[logging.LogRecord]]:
    """Every record the agent logs (its logger may not propagate: the CLI sets it up so)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("agent")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_full_local_disk_while_staging_loses_nothing(
    site: Site, make_agent: Any, small_disk: Path, agent_log: list[logging.LogRecord]
) -> None:
    staging = small_disk / "staging"
    overrides: dict[str, dict[str, Any]] = {
        "spool": {"backfill_days": 100_000},
        "state": {"staging": str(staging)},
    }
    config_path = site.write_config(**overrides)
    # Other data fills the disk but for room for the small recordings, not the big ones.
    filler = small_disk / "filler"
    filler.write_bytes(bytes(free_bytes(small_disk) - FREE_BESIDE_FILLER))
    big = {name(n) for n in (2, 5)}
    for n in range(1, 7):
        seconds = BIG_SECONDS if name(n) in big else SMALL_SECONDS
        write_recording(site.spool_file(f"{DAY}/{name(n)}"), seconds=seconds, seed=n)
    spool_before = snapshot(site.spool)
    assert min(p.stat().st_size for p in site.spool.rglob("*.wav")) * 3 < FREE_BESIDE_FILLER
    assert min(site.spool_file(f"{DAY}/{n}").stat().st_size for n in big) > FREE_BESIDE_FILLER

    agent = make_agent(site.config(**overrides))
    now = time.time()
    agent.start(now)
    agent.run_once(now)

    def rows() -> dict[str, Any]:
        return {r.path.rsplit("/", 1)[-1]: r for r in agent.store.rows()}

    # The big ones wait with a clear reason; the small ones went on.
    for file, row in rows().items():
        if file in big:
            assert row.state == "failed", (file, row.state, row.reason)
            assert row.reason == f"local disk full while staging: {staging}"
            assert row.attempts == 1
            assert now < row.next_attempt_at <= now + RETRY_MAX_SECONDS * 1.2
        else:
            assert (row.state, row.reason) == ("done", None), file
    # Said once per file in the log, as a line, not a traceback.
    full = [r for r in agent_log if "local disk full while staging" in r.getMessage()]
    assert len(full) == len(big)
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in full)
    # Nothing half-written was left in staging or shipped; the spool is untouched.
    assert files_under(small_disk) == ["filler"]
    assert [p for p in site.shipped() if p.endswith(".wav")] == sorted(
        site.remote(f"{DAY}/{name(n)}").relative_to(site.dest).as_posix()
        for n in range(1, 7)
        if name(n) not in big
    )
    assert snapshot(site.spool) == spool_before
    status = recsync(config_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["counts"]["failed"] == len(big)
    assert document["counts"]["done"] == 6 - len(big)
    assert document["counts"]["quarantined"] == 0
    assert document["last_error"]["error"] == f"local disk full while staging: {staging}"
    assert "Traceback" not in status.stderr

    # Still full at their next attempt: failed again, later, never quarantined.
    due = max(r.next_attempt_at for r in rows().values() if r.state == "failed")
    agent.run_once(due)
    assert {(r.state, r.attempts) for f, r in rows().items() if f in big} == {("failed", 2)}
    assert files_under(small_disk) == ["filler"]

    # Room again: each recording is delivered once, byte-identical, with no -2 variant.
    filler.unlink()
    due = max(r.next_attempt_at for r in rows().values() if r.state == "failed")
    agent.run_once(due)
    assert {r.state for r in rows().values()} == {"done"}
    shipped = {p: sha(site.dest / p) for p in site.shipped() if p.endswith(".wav")}
    assert len(shipped) == 6
    assert sorted(shipped.values()) == sorted(v[0] for v in spool_before.values())
    entries = json.loads((site.dest / DAY / "manifest.json").read_text())["recordings"]
    assert sorted(e["file"] for e in entries) == sorted(shipped)
    assert files_under(small_disk) == []
    assert snapshot(site.spool) == spool_before


def no_space(*_args: object, **_kwargs: object) -> None:
    # What mutagen raises when the disk is full: its error wrapping the OSError.
    raise mutagen.MutagenError(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))


def quota_exceeded(src: Path, *_args: object, **_kwargs: object) -> None:
    # What to_mp3 raises when its output cannot be written.
    error = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    raise TransientError(f"transcode {src.name}: {error.strerror}") from error


@pytest.mark.parametrize(
    ("overrides", "target", "fault"),
    [
        ({"tags": {"enabled": True}}, (mutagen.wave.WAVE, "save"), no_space),
        ({"transcode": {"format": "mp3"}}, (prepare_module, "to_mp3"), quota_exceeded),
    ],
    ids=["tags", "transcode"],
)
def test_disk_full_after_the_copy_says_so_and_leaves_nothing(
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, dict[str, Any]],
    target: tuple[object, str],
    fault: Any,
) -> None:
    """Tagging and transcoding write too: their disk-full errors read the same, and the
    copy made before them is removed."""
    config = site.config(**overrides)
    src = site.spool_file(name(1))
    write_recording(src, seed=1)
    monkeypatch.setattr(*target, fault)
    with pytest.raises(TransientError) as raised:
        prepare_module.prepare(config, src=src, key="7", fields={}, repair_header=False)
    assert str(raised.value) == f"local disk full while staging: {config.state.staging}"
    assert list(config.state.staging.iterdir()) == []
