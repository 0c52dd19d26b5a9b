"""The webhook outbox: what the CRM is still to be told, written in the same
transaction as the recording's transition that caused it."""

from __future__ import annotations

import sqlite3

from agent.store.tx import Transaction, transaction


def enqueue(tx: Transaction, rid: int, event: str, now: float) -> None:
    tx.execute(
        "INSERT INTO webhooks (recording_id, event, next_attempt_at, created_at)"
        " VALUES (?, ?, ?, ?)",
        (rid, event, now, now),
    )


def prune(tx: Transaction, before: float) -> int:
    """Settled (delivered or refused) entries older than `before`; returns how many."""
    cursor = tx.execute(
        "DELETE FROM webhooks WHERE state != 'pending' AND created_at < ?", (before,)
    )
    return int(cursor.rowcount)


class Webhooks:
    """The outbox table over the store's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def due(self, now: float, limit: int = 50) -> list[tuple[int, int, str, int]]:
        """(outbox id, recording id, event, attempts) of the CRM events to send now."""
        return [
            (int(wid), int(rid), str(event), int(attempts))
            for wid, rid, event, attempts in self.conn.execute(
                "SELECT id, recording_id, event, attempts FROM webhooks WHERE state = 'pending'"
                " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (now, limit),
            )
        ]

    def sent(self, wid: int, rid: int, *, event: str, now: float) -> None:
        with transaction(self.conn) as tx:
            tx.execute(
                "UPDATE webhooks SET state = 'delivered', delivered_at = ?,"
                " attempts = attempts + 1, last_error = NULL WHERE id = ?",
                (now, wid),
            )
            tx.event(rid, now, "webhook-sent", event)

    def failed(self, wid: int, rid: int, *, error: str, retry_at: float | None, now: float) -> None:
        """A failed delivery: tried again at `retry_at`, or never (None: the CRM refused)."""
        with transaction(self.conn) as tx:
            tx.execute(
                "UPDATE webhooks SET state = ?, attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = coalesce(?, next_attempt_at) WHERE id = ?",
                ("pending" if retry_at is not None else "refused", error, retry_at, wid),
            )
            tx.event(
                rid, now, "webhook-failed" if retry_at is not None else "webhook-refused", error
            )
