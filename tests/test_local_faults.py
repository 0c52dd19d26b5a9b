"""Faults of the PBX's own side (issue 9): a full local disk while staging, and the state
database shared with the CLI (a long read transaction, a held write lock)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import mutagen.wave
import pytest

from agent.errors import TransientError
from agent.media import prepare as prepare_module
from agent.model import Identity
from agent.pipeline import LOCAL_RETRY_MAX_SECONDS, RETRY_MAX_SECONDS
from agent.store.state import Store
from tests.conftest import Site
from tests.support.daemon import Daemon, recsync, wait_for
from tests.support.disks import free_bytes, resize
from tests.support.files import sha, snapshot
from tests.support.mixmonitor import write_recording

DAY = "2024/03/15"
SMALL_SECONDS = 1  # 16 kB: fits beside the filler
BIG_SECONDS = 12  # 192 kB: does not, but fits once the filler is gone
FREE_BESIDE_FILLER = 96 * 1024


def name(n: int) -> str:
    return f"in-600-21255501{n:02d}-20240315-1015{n:02d}-1710497702.{n}.wav"


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


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
    assert document["last_error"]["state"] == "failed"
    assert document["destination"]["state"] == "ok"  # the fault is ours, not the webserver's
    assert "Traceback" not in status.stderr

    # Still full at their next attempt: failed again, later, never quarantined.
    due = max(r.next_attempt_at for r in rows().values() if r.state == "failed")
    agent.run_once(due)
    assert {(r.state, r.attempts) for f, r in rows().items() if f in big} == {("failed", 2)}
    # However long the disk stays full, the next try is within minutes, not an hour.
    agent.store.conn.execute("UPDATE recordings SET attempts = 12 WHERE state = 'failed'")
    due = max(r.next_attempt_at for r in rows().values() if r.state == "failed")
    agent.run_once(due)
    waits = [r.next_attempt_at - due for f, r in rows().items() if f in big]
    assert waits and all(0 < w <= LOCAL_RETRY_MAX_SECONDS for w in waits)
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


@pytest.mark.parametrize("room", [0, 160 << 10], ids=["at-open", "mid-run"])
def test_state_database_on_a_full_disk_stops_with_a_clear_error(
    site: Site, small_disk: Path, room: int
) -> None:
    """The state database cannot grow (at once, or once its WAL has used the room left):
    the agent stops with one clear line (systemd restarts it), and once there is room it
    ships everything exactly once."""
    config_path = site.write_config(
        spool={"backfill_days": 100_000},
        state={"path": str(small_disk / "state.db"), "staging": str(site.state / "staging")},
    )
    for n in range(1, 4):
        write_recording(site.spool_file(f"{DAY}/{name(n)}"), seed=n)
    first = recsync(config_path, "run", "--once")
    assert first.returncode == 0, first.stderr
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while free_bytes(small_disk) > room:
            f.write(bytes(4096))
            f.flush()
    for n in range(4, 40):
        write_recording(site.spool_file(f"{DAY}/{name(n)}"), seed=n)
    spool_before = snapshot(site.spool)

    stopped = recsync(config_path, "run", "--once")
    assert stopped.returncode == 1
    assert "full" in stopped.stderr.splitlines()[-1], stopped.stderr
    assert "Traceback" not in stopped.stderr

    filler.unlink()
    resize(small_disk, 16 << 20)  # room for the WAL too, which grows to 4 MB between checkpoints
    again = recsync(config_path, "run", "--once")
    assert again.returncode == 0, again.stderr
    shipped = {p: sha(site.dest / p) for p in site.shipped() if p.endswith(".wav")}
    assert sorted(shipped.values()) == sorted(v[0] for v in spool_before.values())
    assert snapshot(site.spool) == spool_before


def test_a_recording_someone_reads_ships_at_once(site: Site, make_agent: Any) -> None:
    """A playback, a backup or a test reading a finished recording is no writer: it used
    to park the recording for a minute ("open by a process"), as no event says when a
    reader closes."""
    rel = f"{DAY}/{name(1)}"
    write_recording(site.spool_file(rel), seed=1)
    agent = make_agent(site.config(spool={"backfill_days": 100_000}))
    with (site.spool / rel).open("rb"):
        now = time.time()
        agent.start(now)
        agent.run_once(now)
    row = agent.store.by_stem(rel[:-4])
    assert (row.state, row.reason) == ("done", None)


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
    copy made before them is removed. (A chunk after the audio makes mutagen tag the
    copy: a plain WAV is composed in one pass, whose disk-full is the copy's own.)"""
    config = site.config(**overrides)
    src = site.spool_file(name(1))
    write_recording(src, seed=1)
    with src.open("ab") as file:
        file.write(b"LIST\x04\x00\x00\x00INFO")
    monkeypatch.setattr(*target, fault)
    with pytest.raises(TransientError) as raised:
        recipe = prepare_module.Recipe(
            staging=config.state.staging, tags=config.tags.enabled, transcode=config.transcode
        )
        prepare_module.prepare(recipe, src=src, key="7", fields={}, repair_header=False)
    assert str(raised.value) == f"local disk full while staging: {config.state.staging}"
    assert list(config.state.staging.iterdir()) == []


# --- the state database and the CLI ------------------------------------------------------

HOLD_SECONDS = 1.0  # how long the "agent" keeps the write lock with the CLI waiting on it


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def count_done(db: Path) -> int:
    """Read beside the agent, in a transaction of its own (as a fresh CLI would)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (count,) = conn.execute("SELECT count(*) FROM recordings WHERE state = 'done'").fetchone()
    finally:
        conn.close()
    return int(count)


def record_today(site: Site, numbers: range) -> None:
    at = datetime.now().replace(microsecond=0)
    for n in numbers:
        rel = f"{at:%Y/%m/%d}/in-600-21255{n:05d}-{at:%Y%m%d-%H%M%S}-{int(at.timestamp())}.{n}.wav"
        write_recording(site.spool_file(rel), seconds=0.25, seed=n)


@pytest.mark.slow
def test_a_long_cli_read_never_holds_up_the_agent(site: Site, daemons: list[Daemon]) -> None:
    config = site.write_config(spool={"reconcile_minutes": 600})
    db = site.state / "state.db"
    (site.spool / datetime.now().strftime("%Y/%m/%d")).mkdir(parents=True)
    daemon = Daemon(config, site.root / "agent.log")
    daemons.append(daemon)
    record_today(site, range(5))
    wait_for(lambda: count_done(db) == 5, "the first recordings to ship")

    # A CLI that reads in one transaction and does not finish (`list` into a stuck pipe).
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        reader.execute("BEGIN")
        query = "SELECT id, state, remote_path FROM recordings ORDER BY id"
        seen = reader.execute(query).fetchall()
        assert [state for _, state, _ in seen] == ["done"] * 5
        record_today(site, range(5, 55))
        wait_for(lambda: count_done(db) == 55, "50 more to ship past the open reader", 30)
        assert len(list(site.dest.rglob("*.wav"))) == 55
        assert reader.execute(query).fetchall() == seen  # its snapshot, consistent
        wal_with_reader = Path(f"{db}-wal").stat().st_size
    finally:
        reader.close()

    status = recsync(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert (document["counts"]["done"], document["backlog"]) == (55, 0)
    # The WAL the reader kept from being reset checkpoints in full now, agent running.
    checkpoint = sqlite3.connect(db, timeout=10)
    try:
        busy, frames, moved = checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        checkpoint.close()
    assert busy == 0 and frames == moved, (busy, frames, moved, wal_with_reader)
    record_today(site, range(55, 56))
    wait_for(lambda: count_done(db) == 56, "the agent to go on after the checkpoint")
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.text() and "locked" not in daemon.text()


def waiting_on_the_lock(proc: subprocess.Popen[str], db: Path) -> bool:
    """The CLI has the state database open and sleeps in SQLite's busy handler (or ended)."""
    if proc.poll() is not None:
        return True
    try:
        fds = {os.readlink(fd) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()}
        wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return proc.poll() is not None
    return str(db) in fds and "nanosleep" in wchan


def test_cli_waits_for_the_agents_write_lock(site: Site) -> None:
    config = site.write_config()
    db = site.state / "state.db"
    store = Store.open(db)
    now = time.time()
    shipped, failing = (
        store.add(stem=stem, path=f"{stem}.wav", identity=Identity(44, 1, n), now=now)
        for n, stem in enumerate(("shipped-meanwhile", "failing-meanwhile"))
    )
    store.mark_failed(shipped, error="connection reset", retry_at=now + 60, now=now)
    store.close()

    locked, release = threading.Event(), threading.Event()

    def agent_transaction() -> None:
        """The agent in one write transaction: the failed one shipped, another failed."""
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE recordings SET state = 'done' WHERE id = ?", (shipped,))
            conn.execute("UPDATE recordings SET state = 'failed' WHERE id = ?", (failing,))
            locked.set()
            release.wait(timeout=60)
            conn.execute("COMMIT")
        finally:
            conn.close()

    agent = threading.Thread(target=agent_transaction)
    agent.start()
    try:
        assert locked.wait(timeout=10)
        # Readers never wait in WAL: the last committed state, at once.
        status = recsync(config, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["counts"]["failed"] == 1
        retry = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(config), "retry", "--failed"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: waiting_on_the_lock(retry, db), "the CLI to wait for the write lock")
        assert retry.poll() is None, retry.communicate()
        time.sleep(HOLD_SECONDS)  # the agent's transaction takes a while; the CLI waits
        assert retry.poll() is None
    finally:
        release.set()
        agent.join()
    out, err = retry.communicate(timeout=30)
    assert retry.returncode == 0, err
    # It decided inside its own write transaction, on what the agent had committed.
    assert out.strip() == "1 recording(s) queued again"
    store = Store.open_readonly(db)
    try:
        states = {r.id: r.state for r in store.rows()}
    finally:
        store.close()
    assert states == {shipped: "done", failing: "pending"}
