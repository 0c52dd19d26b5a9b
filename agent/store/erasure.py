"""`recsync forget`: erasure on request, in the state database.

Three steps, each repeatable, so a forget cut anywhere is finished by running it again:
`begin` (the rows become expired — never shipped again —, their days are marked for
publishing, the CRM is told, the ledger has the call), then the caller removes the files,
then `scrub` clears the caller fields. The number itself is never stored: the ledger
keeps its sha256 and the calls' uniqueids.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable

from agent.model import RecordingState
from agent.store import days, webhooks
from agent.store.holds import HELD, NUMBER_COLUMNS
from agent.store.tx import transaction

DELETED = "recording.deleted"
ERASED = "erased on request"
# What a row says of the caller beyond its file names, cleared once the files are gone.
_CALLER_COLUMNS = ("caller_number", "caller_name", "cdr_dst", "did", "src", "dst", "head")


def number_sha256(digits: str) -> str:
    return hashlib.sha256(digits.encode()).hexdigest()


class Erasure:
    """The erasures ledger and the erasing transitions over the store's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def matching(self, digits: str, *, held: bool) -> list[tuple[int, str | None, str, str]]:
        """(id, remote_path, spool path, state) of the recordings whose caller or
        destination number is `digits` (normalised: see holds.normalise), the held ones
        (`held`) or the others. Bound parameters only."""
        where = f"? IN {NUMBER_COLUMNS} AND {'' if held else 'NOT '}{HELD}"
        return [
            (int(rid), remote, str(path), str(state))
            for rid, remote, path, state in self.conn.execute(
                f"SELECT id, remote_path, path, state FROM recordings WHERE {where} ORDER BY id",
                (digits,),
            )
        ]

    def begin(self, ids: Iterable[int], digits: str, *, notify: bool, now: float) -> None:
        wanted = list(ids)
        marks = ",".join("?" * len(wanted))
        with transaction(self.conn) as tx:
            found = tx.execute(
                f"SELECT id, uniqueid, remote_path, state, reason FROM recordings"
                f" WHERE id IN ({marks})",
                wanted,
            ).fetchall()
            for rid, _, remote, state, reason in found:
                if state == RecordingState.EXPIRED.value and reason == ERASED:
                    continue  # a forget that was cut: already begun
                tx.execute(
                    "UPDATE recordings SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                    (RecordingState.EXPIRED.value, ERASED, now, rid),
                )
                if remote is not None:
                    days.mark_dirty(tx, remote.rsplit("/", 1)[0])
                    if notify and state == RecordingState.DONE.value:
                        webhooks.enqueue(tx, rid, DELETED, now)
                tx.event(rid, now, "erased", None)
            uniqueids = sorted({str(u) for _, u, _, _, _ in found if u})
            tx.execute(
                "INSERT INTO erasures (number_sha256, uniqueids, at) VALUES (?, ?, ?)",
                (number_sha256(digits), json.dumps(uniqueids), now),
            )
            tx.event(None, now, "erasure", f"{len(found)} recording(s)")

    def scrub(self, ids: Iterable[int], *, now: float) -> None:
        """The files are gone: nothing in the row names the caller but the file names
        FreePBX gave (kept, so an original left in the spool is known and never shipped)."""
        cleared = ", ".join(f"{c} = NULL" for c in _CALLER_COLUMNS)
        with transaction(self.conn) as tx:
            for rid in ids:
                tx.execute(
                    f"UPDATE recordings SET {cleared}, updated_at = ? WHERE id = ?", (now, rid)
                )
                tx.event(rid, now, "scrubbed", None)

    def restore(self, entries: Iterable[dict[str, object]], *, now: float) -> None:
        """`state rebuild`: the ledger read back from the destination's copy."""
        with transaction(self.conn) as tx:
            for entry in entries:
                tx.execute(
                    "INSERT INTO erasures (number_sha256, uniqueids, at) VALUES (?, ?, ?)",
                    (str(entry["number_sha256"]), json.dumps(entry["uniqueids"]), entry["at"]),
                )
            tx.event(None, now, "erasures-restored", None)

    def uniqueids(self) -> set[str]:
        """Every erased call's uniqueid."""
        found: set[str] = set()
        for (text,) in self.conn.execute("SELECT uniqueids FROM erasures"):
            found |= set(json.loads(text))
        return found

    def ledger(self) -> list[dict[str, object]]:
        """The ledger as the destination keeps a copy of it (erasures.json)."""
        return [
            {"number_sha256": h, "uniqueids": json.loads(u), "at": at}
            for h, u, at in self.conn.execute(
                "SELECT number_sha256, uniqueids, at FROM erasures ORDER BY id"
            )
        ]
