"""The state database: schema by migration, one transaction per transition, WAL reads."""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import spoolnames
from agent.errors import AgentError
from agent.model import Identity, RecordingState
from agent.store.state import Row, StateDatabaseError, Store

NOW = 1_710_497_702.0
NAME = "out-2125551234-100-20240315-101502-1710497702.42.wav"
DAY = "2024/03/15"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.open(db_path)
    yield s
    s.close()


def identity(n: int = 1) -> Identity:
    return Identity(size=1000 + n, mtime_ns=n * 1_000_000_000, inode=n)


def add(
    store: Store,
    stem: str,
    *,
    now: float = NOW,
    state: RecordingState = RecordingState.PENDING,
    reason: str | None = None,
) -> int:
    return store.add(
        stem=f"{DAY}/{stem}",
        path=f"{DAY}/{stem}.wav",
        identity=identity(len(store.rows()) + 1),
        now=now,
        state=state,
        reason=reason,
    )


def row(store: Store, rid: int) -> Row:
    found = store.get(rid)
    assert found is not None
    return found


def claim(store: Store, rid: int, now: float = NOW) -> None:
    store.claim(rid, identity=identity(99), sha256="0" * 64, size=1099, now=now)


def parsed(store: Store, rid: int) -> None:
    store.set_parsed(rid, spoolnames.parse(NAME), NOW)


PARSED_FIELDS = ("kind", "dst", "src", "started_at", "uniqueid", "extension", "era", "pattern")


# --- opening --------------------------------------------------------------------------


def test_open_creates_a_wal_database_with_its_migration(store: Store, db_path: Path) -> None:
    assert db_path.exists()
    other = sqlite3.connect(db_path)  # the mode is stored in the file, not the connection
    try:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {name for (name,) in other.execute("SELECT name FROM sqlite_master")}
        applied = other.execute("SELECT migration_set, name FROM _sqlite_migrations").fetchall()
    finally:
        other.close()
    assert {"recordings", "events", "dirty_days", "meta"} <= tables
    assert applied == [
        ("recsync", "0001_initial"),
        ("recsync", "0002_cdr"),
        ("recsync", "0003_webhooks"),
        ("recsync", "0004_days"),
        ("recsync", "0005_path_index"),
        ("recsync", "0006_events_by_name"),
        ("recsync", "0007_multipart"),
        ("recsync", "0008_retention"),
        ("recsync", "0009_expiry"),
        ("recsync", "0010_erasures"),
        ("recsync", "0011_day_search"),
        ("recsync", "0012_audio_seconds"),
        ("recsync", "0013_search_per_day"),
    ]


def test_opening_again_keeps_rows_and_applies_nothing(db_path: Path) -> None:
    first = Store.open(db_path)
    rid = add(first, "a")
    first.close()
    again = Store.open(db_path)
    try:
        assert row(again, rid).stem == f"{DAY}/a"
        count = again.conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()
    finally:
        again.close()
    assert count == (13,)  # one record per migration, not one per open


# --- transitions ----------------------------------------------------------------------


def test_add_makes_a_pending_row_due_now(store: Store) -> None:
    r = row(store, add(store, "a"))
    assert (r.state, r.reason, r.attempts) == ("pending", None, 0)
    assert r.next_attempt_at == r.seen_at == NOW
    assert (r.remote_path, r.version) == (None, 0)
    assert [x.id for x in store.due(NOW)] == [r.id]


def test_add_can_be_born_skipped(store: Store) -> None:
    rid = add(store, "old", state=RecordingState.SKIPPED, reason="older than the window")
    assert (row(store, rid).state, row(store, rid).reason) == ("skipped", "older than the window")
    assert store.due(NOW) == []


def test_same_candidates_give_different_remote_paths(store: Store) -> None:
    candidates = [f"{DAY}/x.wav", f"{DAY}/x-2.wav", f"{DAY}/x-3.wav"]
    a, b = add(store, "a"), add(store, "b")
    assert store.fix_remote_path(a, candidates, NOW) == f"{DAY}/x.wav"
    assert store.fix_remote_path(b, candidates, NOW) == f"{DAY}/x-2.wav"
    assert [row(store, a).remote_path, row(store, b).remote_path] == candidates[:2]


def test_remote_path_is_fixed_once(store: Store) -> None:
    rid = add(store, "a")
    first = store.fix_remote_path(rid, [f"{DAY}/first.wav"], NOW)
    assert store.fix_remote_path(rid, [f"{DAY}/second.wav"], NOW + 1) == first
    assert row(store, rid).remote_path == f"{DAY}/first.wav"


def test_no_free_remote_path_is_an_error(store: Store) -> None:
    a, b = add(store, "a"), add(store, "b")
    store.fix_remote_path(a, [f"{DAY}/x.wav"], NOW)
    with pytest.raises(AgentError):
        store.fix_remote_path(b, [f"{DAY}/x.wav"], NOW)
    assert row(store, b).remote_path is None


def test_recover_hands_uploading_rows_back(store: Store) -> None:
    stranded, idle = add(store, "a"), add(store, "b")
    claim(store, stranded)
    assert row(store, stranded).state == "uploading"
    recovered = store.recover(NOW + 60)
    assert [r.id for r in recovered] == [stranded]
    assert (row(store, stranded).state, row(store, stranded).next_attempt_at) == (
        "pending",
        NOW + 60,
    )
    assert row(store, idle).updated_at == NOW  # untouched
    assert store.recover(NOW + 61) == []


def test_mark_done_bumps_the_version_and_dirties_the_day(store: Store) -> None:
    rid = add(store, "a")
    store.mark_failed(rid, error="timeout", retry_at=NOW + 30, now=NOW)
    claim(store, rid, NOW + 30)
    store.mark_done(rid, day=DAY, now=NOW + 31)
    r = row(store, rid)
    assert (r.state, r.version, r.attempts, r.reason, r.uploaded_at) == (
        "done",
        1,
        0,
        None,
        NOW + 31,
    )
    assert store.days.dirty() == [DAY]
    store.days.published(DAY, 1, now=NOW)
    assert store.days.dirty() == [] and store.days.counts() == [(DAY, 1)]
    store.reopen(rid, path=r.path, identity=identity(7), now=NOW + 40, why="grew")
    claim(store, rid, NOW + 41)
    store.mark_done(rid, day=DAY, now=NOW + 42)
    assert row(store, rid).version == 2
    assert store.days.dirty() == [DAY]


def test_mark_failed_counts_attempts_and_schedules_the_next(store: Store) -> None:
    rid = add(store, "a")
    store.mark_failed(rid, error="connection reset", retry_at=NOW + 30, now=NOW)
    store.mark_failed(rid, error="timeout", retry_at=NOW + 90, now=NOW + 30)
    r = row(store, rid)
    assert (r.state, r.attempts, r.next_attempt_at, r.reason) == ("failed", 2, NOW + 90, "timeout")
    assert store.due(NOW + 89) == []
    assert [x.id for x in store.due(NOW + 90)] == [rid]


# --- retry ----------------------------------------------------------------------------


@pytest.fixture
def mixed(store: Store) -> dict[str, int]:
    """One row in each terminal-ish state, the quarantined and failed ones parsed."""
    ids = {name: add(store, name) for name in ("quarantined", "failed", "done", "skipped")}
    for rid in ids.values():
        parsed(store, rid)
    store.quarantine(ids["quarantined"], reason="unreadable", now=NOW)
    store.mark_failed(ids["failed"], error="timeout", retry_at=NOW + 900, now=NOW)
    claim(store, ids["done"])
    store.mark_done(ids["done"], day=DAY, now=NOW)
    store.skip(ids["skipped"], reason="no audio", now=NOW)
    return ids


def test_retry_quarantined_requeues_them_unparsed(store: Store, mixed: dict[str, int]) -> None:
    before = {name: row(store, rid) for name, rid in mixed.items()}
    assert store.retry(states=[RecordingState.QUARANTINED], now=NOW + 5) == 1
    r = row(store, mixed["quarantined"])
    assert (r.state, r.reason, r.attempts, r.next_attempt_at) == ("pending", None, 0, NOW + 5)
    assert {f: getattr(r, f) for f in PARSED_FIELDS} == dict.fromkeys(PARSED_FIELDS)
    for name in ("failed", "done", "skipped"):
        assert row(store, mixed[name]) == before[name]


def test_retry_by_id_touches_only_those(store: Store, mixed: dict[str, int]) -> None:
    before = {name: row(store, rid) for name, rid in mixed.items()}
    wanted = [mixed["failed"], mixed["done"], mixed["skipped"]]
    assert store.retry(ids=wanted, now=NOW + 5) == 1
    assert row(store, mixed["failed"]).state == "pending"
    for name in ("quarantined", "done", "skipped"):
        assert row(store, mixed[name]) == before[name]


def test_retry_never_touches_done_rows(store: Store, mixed: dict[str, int]) -> None:
    before = row(store, mixed["done"])
    every_state = list(RecordingState)
    assert store.retry(ids=mixed.values(), states=every_state, now=NOW + 5) == 2
    assert row(store, mixed["done"]) == before


# --- due ------------------------------------------------------------------------------


def test_due_orders_by_time_and_leaves_out_future_and_terminal_rows(store: Store) -> None:
    later = add(store, "later", now=NOW - 10)
    first = add(store, "first", now=NOW - 50)
    failed = add(store, "failed", now=NOW - 100)
    store.mark_failed(failed, error="timeout", retry_at=NOW - 20, now=NOW - 90)
    future = add(store, "future", now=NOW - 200)
    store.defer(future, until=NOW + 1, reason="open by a process", now=NOW - 200)
    failed_future = add(store, "failed-future", now=NOW - 100)
    store.mark_failed(failed_future, error="timeout", retry_at=NOW + 30, now=NOW - 90)
    uploading = add(store, "uploading", now=NOW - 300)
    claim(store, uploading)
    store.mark_done(add(store, "done", now=NOW - 300), day=DAY, now=NOW - 300)
    store.quarantine(add(store, "quarantined", now=NOW - 300), reason="bad name", now=NOW - 300)
    store.skip(add(store, "skipped", now=NOW - 300), reason="no audio", now=NOW - 300)
    assert [r.id for r in store.due(NOW)] == [first, failed, later]
    assert [r.id for r in store.due(NOW, limit=1)] == [first]
    assert [r.id for r in store.due(NOW + 30)] == [first, failed, later, future, failed_future]


# --- read-only access and damage ------------------------------------------------------


def test_open_readonly_without_a_database(db_path: Path) -> None:
    with pytest.raises(StateDatabaseError, match="no state database") as caught:
        Store.open_readonly(db_path)
    assert str(db_path) in str(caught.value)
    assert not db_path.exists()


def test_readonly_store_reads_during_a_write_transaction(store: Store, db_path: Path) -> None:
    rid = add(store, "a")
    writer = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    try:
        # A small cache makes the big transaction spill before it commits: without WAL that
        # takes the exclusive lock and shuts readers out until the commit.
        writer.execute("PRAGMA cache_size = 10")
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE recordings SET state = 'done' WHERE id = ?", (rid,))
        writer.executemany(
            "INSERT INTO events (at, recording_id, event, detail) VALUES (?, ?, 'x', ?)",
            [(NOW, rid, "y" * 1000)] * 5000,
        )
        reader = Store.open_readonly(db_path)
        try:
            assert row(reader, rid).state == "pending"  # the last committed state
            assert [r.id for r in reader.rows()] == [rid]
        finally:
            reader.close()
        writer.execute("COMMIT")
    finally:
        writer.close()


def test_readonly_store_cannot_write(store: Store, db_path: Path) -> None:
    add(store, "a")
    reader = Store.open_readonly(db_path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.set_meta("k", "v", now=NOW)
    finally:
        reader.close()
    assert store.meta("k") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as root")
@pytest.mark.parametrize("opener", [Store.open, Store.open_readonly], ids=["open", "readonly"])
def test_root_leaves_no_root_owned_files_beside_the_database(
    db_path: Path, opener: Callable[[Path], Store]
) -> None:
    # The CLI run as root next to a service user's database: the -wal/-shm files a read
    # leaves must stay usable by the daemon (SQLite gives them the database's owner).
    Store.open(db_path).close()
    service_uid = 65534
    for path in [db_path.parent, *db_path.parent.iterdir()]:
        os.chown(path, service_uid, service_uid)
    store = opener(db_path)
    store.rows()
    store.close()
    owners = {p.name: p.stat().st_uid for p in db_path.parent.iterdir()}
    assert owners == dict.fromkeys(owners, service_uid)


OPENERS: dict[str, Callable[[Path], Store]] = {
    "open": Store.open,
    "open_readonly": Store.open_readonly,
}


@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
def test_corrupt_file_is_a_state_database_error(
    db_path: Path, opener: Callable[[Path], Store]
) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(random.Random(0).randbytes(8192))
    with pytest.raises(StateDatabaseError) as caught:
        opener(db_path)
    assert str(db_path) in str(caught.value)


def test_foreign_sqlite_file_is_a_state_database_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    other = sqlite3.connect(db_path)
    other.execute("CREATE TABLE unrelated (x)")
    other.commit()
    other.close()
    with pytest.raises(StateDatabaseError, match="cannot read"):
        Store.open_readonly(db_path)


# --- a .wav replaced by an .mp3 -------------------------------------------------------


def test_replace_file_renames_the_remote_and_remembers_the_old(store: Store) -> None:
    rid = add(store, "x")
    parsed(store, rid)
    assert store.fix_remote_path(rid, [f"{DAY}/x.wav"], NOW) == f"{DAY}/x.wav"
    claim(store, rid)
    store.mark_done(rid, day=DAY, now=NOW)
    store.replace_file(rid, path=f"{DAY}/x.mp3", identity=identity(5), now=NOW + 60)
    r = row(store, rid)
    assert (r.remote_path, r.obsolete_remote) == (f"{DAY}/x.mp3", f"{DAY}/x.wav")
    assert (r.path, r.identity, r.state, r.format) == (f"{DAY}/x.mp3", identity(5), "pending", None)
    assert [x.id for x in store.due(NOW + 60)] == [rid]


def test_replace_file_before_naming_leaves_the_remote_unset(store: Store) -> None:
    rid = add(store, "x")
    store.replace_file(rid, path=f"{DAY}/x.mp3", identity=identity(5), now=NOW + 60)
    r = row(store, rid)
    assert (r.path, r.remote_path, r.obsolete_remote) == (f"{DAY}/x.mp3", None, None)


def test_prune_keeps_recordings_and_recent_history(store: Store) -> None:
    old = add(store, "old", now=NOW - 40 * 86400)
    new = add(store, "new", now=NOW)
    store.mark_done(old, day=DAY, now=NOW - 40 * 86400, notify=True)
    store.mark_done(new, day=DAY, now=NOW, notify=True)
    for wid, rid, event, _ in store.webhooks.due(NOW):
        store.webhooks.sent(wid, rid, event=event, now=NOW - 40 * 86400 if rid == old else NOW)
    # old's three events (seen, done, webhook-sent) and its delivered webhook
    assert store.prune(NOW - 30 * 86400, now=NOW) == 4
    assert {r.stem for r in store.rows()} == {f"{DAY}/old", f"{DAY}/new"}
    history = store.conn.execute("SELECT recording_id, event FROM events").fetchall()
    assert {rid for (rid, _) in history} == {new, None}
    assert (None, "pruned") in history
    assert store.webhooks.due(NOW) == []


def test_in_spool_pages_through_every_row_oldest_first(store: Store) -> None:
    """Retention's candidates, a page at a time, while the pass changes rows between pages."""
    ids = []
    for n in range(7):
        rid = add(store, f"r{n}")
        store.claim(
            rid,
            identity=Identity(1, 1, 1),
            sha256="0" * 64,
            size=1,
            now=0.0,
            candidates=[f"{DAY}/r{n}.wav"],
        )
        store.mark_done(rid, day=DAY, now=100.0 - n)  # the last added shipped first
        ids.append(rid)
    seen = []
    for row in store.in_spool(page=2):
        seen.append(row.id)
        store.spool_removed(row.id, event="spool-deleted", detail="test", now=200.0)
    assert seen == list(reversed(ids))
    assert list(store.in_spool(page=2)) == []
    with pytest.raises(ValueError):
        next(store.in_spool(oldest="id; DROP TABLE recordings"))
