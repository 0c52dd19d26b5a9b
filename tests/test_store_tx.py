"""The one write path: a transaction with its event rows, rolled back whatever fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.store.state import Store
from agent.store.tx import transaction


class CommitFailsOnce(sqlite3.Connection):
    """A connection whose next COMMIT fails as SQLITE_FULL would."""

    fail_next_commit = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fail_next_commit:
            self.fail_next_commit = False
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


@pytest.fixture
def conn(tmp_path: Path) -> Any:
    Store.open(tmp_path / "state.db").close()  # the schema
    c = sqlite3.connect(tmp_path / "state.db", isolation_level=None, factory=CommitFailsOnce)
    yield c
    c.close()


def test_a_failed_commit_is_rolled_back_and_the_next_write_works(conn: Any) -> None:
    store = Store(conn)
    conn.fail_next_commit = True
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        store.set_meta("k", "lost", now=1.0)
    assert not conn.in_transaction
    assert store.meta("k") is None
    store.set_meta("k", "kept", now=2.0)  # no "cannot start a transaction within a transaction"
    assert store.meta("k") == "kept"


def test_a_write_without_its_event_is_refused_and_undone(conn: Any) -> None:
    with pytest.raises(AssertionError, match="without its event row"), transaction(conn) as tx:
        tx.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM meta WHERE key = 'k'").fetchone() == (0,)


def test_every_store_write_leaves_an_event(conn: Any) -> None:
    store = Store(conn)
    rid = store.add(stem="a", path="a.wav", identity=_identity(), now=1.0)
    store.mark_done(rid, day="2024/03/15", now=2.0, notify=True)
    (wid, _, event, _), *_ = store.webhooks.due(3.0)
    store.webhooks.failed(wid, rid, error="HTTP 503", retry_at=10.0, now=3.0)
    store.webhooks.sent(wid, rid, event=event, now=10.0)
    store.days.published("2024/03/15", 1, now=11.0)
    events = conn.execute("SELECT at, recording_id, event FROM events ORDER BY id").fetchall()
    assert [e[2] for e in events] == [
        "pending",
        "done",
        "webhook-failed",
        "webhook-sent",
        "published",
    ]


def _identity() -> Any:
    from agent.model import Identity

    return Identity(size=1000, mtime_ns=1, inode=1)
