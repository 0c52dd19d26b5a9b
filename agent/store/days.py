"""The day index: which days' manifests and pages must be rewritten, and how many
recordings each published day holds (for the root page)."""

from __future__ import annotations

import sqlite3

from agent.store.tx import Transaction, transaction


def mark_dirty(tx: Transaction, day: str) -> None:
    tx.execute("INSERT OR IGNORE INTO dirty_days (day) VALUES (?)", (day,))


def set_count(tx: Transaction, day: str, count: int) -> None:
    tx.execute("INSERT OR REPLACE INTO days (day, count) VALUES (?, ?)", (day, count))


class Days:
    """The day tables over the store's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def dirty(self) -> list[str]:
        return [day for (day,) in self.conn.execute("SELECT day FROM dirty_days ORDER BY day")]

    def counts(self) -> list[tuple[str, int]]:
        return [(str(d), int(n)) for d, n in self.conn.execute("SELECT day, count FROM days")]

    def published(self, day: str, count: int, *, now: float) -> None:
        """The day's manifest, page and search file are written: no longer dirty, `count`
        recordings."""
        with transaction(self.conn) as tx:
            tx.execute("DELETE FROM dirty_days WHERE day = ?", (day,))
            tx.execute("INSERT OR REPLACE INTO days (day, count) VALUES (?, ?)", (day, count))
            tx.event(None, now, "published", f"{day} {count}")

    def older_than(self, day: str) -> list[str]:
        """Published days before `day` (both YYYY/MM/DD)."""
        return [
            d
            for (d,) in self.conn.execute("SELECT day FROM days WHERE day < ? ORDER BY day", (day,))
        ]

    def emptied(self, day: str, *, now: float) -> None:
        """The day holds nothing any more: its manifest and page are gone, the root
        page no longer lists it."""
        with transaction(self.conn) as tx:
            tx.execute("DELETE FROM dirty_days WHERE day = ?", (day,))
            tx.execute("DELETE FROM days WHERE day = ?", (day,))
            tx.event(None, now, "day-emptied", day)

    def mark_all_dirty(self, *, now: float) -> int:
        """`index rebuild`: every day that holds a shipped recording; returns how many."""
        with transaction(self.conn) as tx:
            cursor = tx.execute(
                "INSERT OR IGNORE INTO dirty_days (day) SELECT DISTINCT"
                " substr(remote_path, 1, 10) FROM recordings"
                " WHERE state = 'done' AND remote_path IS NOT NULL"
            )
            tx.event(None, now, "index-rebuild", str(cursor.rowcount))
            return int(cursor.rowcount)
