"""The one path every write to the state database takes: a transaction with its events."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any


class Transaction:
    """An open write transaction. Each write records at least one event row, so the
    history says what changed and when."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.events = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def event(self, rid: int | None, now: float, event: str, detail: str | None = None) -> None:
        self.conn.execute(
            "INSERT INTO events (at, recording_id, event, detail) VALUES (?, ?, ?, ?)",
            (now, rid, event, detail),
        )
        self.events += 1


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[Transaction]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any failure, a failed COMMIT included
    (SQLITE_BUSY, SQLITE_FULL leave the transaction open otherwise, and every later
    write on the connection would fail with "cannot start a transaction within a
    transaction"). IMMEDIATE takes the write lock up front, so a concurrent CLI write
    waits on the busy timeout instead of failing with a stale snapshot."""
    conn.execute("BEGIN IMMEDIATE")
    tx, changes = Transaction(conn), conn.total_changes
    try:
        yield tx
        if tx.events == 0 and conn.total_changes != changes:
            raise AssertionError("a write without its event row")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the first error is the one to see
                conn.execute("ROLLBACK")
        raise
