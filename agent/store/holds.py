"""Legal holds: recordings no retention rule may delete, by number, uniqueid or day.

Values are normalised before they are stored and compared with bound parameters only,
so a hostile value (`../`, quotes, `%`, a 2 KB string) is either refused or matches
what it literally says and nothing else: no LIKE, no text pasted into SQL.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import date

from agent.errors import AgentError
from agent.store.tx import transaction

KINDS = ("number", "uniqueid", "day")
MAX_DIGITS = 32  # E.164 is 15; dial prefixes and internal routes add a few
MAX_UNIQUEID = 150  # Asterisk's AST_MAX_UNIQUEID
_ASCII_DIGITS = frozenset("0123456789")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadHold(AgentError):
    """A hold's value that cannot name recordings."""


def digits(text: str | None) -> str | None:
    """The ASCII digits of a number as the CDR or a file name writes it ("+1 (555) 010-2030"
    -> "15550102030"); registered in SQLite so both sides are compared alike. Not
    str.isdigit: it admits other scripts' digits, which no dial plan matches."""
    if text is None:
        return None
    return "".join(c for c in str(text) if c in _ASCII_DIGITS)


def normalise(kind: str, value: str) -> str:
    """The stored form of a hold's value, or BadHold saying why it names nothing."""
    if kind == "number":
        found = digits(value) or ""
        if not found:
            raise BadHold(f"--number {value[:40]!r}: no digits in it")
        if len(found) > MAX_DIGITS:
            raise BadHold(f"--number: {len(found)} digits is not a phone number")
        return found
    if kind == "uniqueid":
        text = value.strip()
        if not text or len(text) > MAX_UNIQUEID or not text.isprintable():
            raise BadHold(f"--uniqueid {value[:40]!r}: not a uniqueid")
        return text
    if kind == "day":
        try:
            if not _DAY.fullmatch(value):
                raise ValueError(value)
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise BadHold(f"--day {value[:40]!r}: expected YYYY-MM-DD") from None
    raise BadHold(f"unknown kind of hold {kind!r} (one of {', '.join(KINDS)})")


# True for a row of `recordings` some hold covers. A number matches the caller and the
# destination columns, whichever the CDR or the file name filled in; a uniqueid also
# matches the call's linkedid (a hold on one leg keeps the whole call); a day is the
# recording's start as its name says (the destination's YYYY/MM/DD folder).
# The caller and destination columns, the CDR's and the file name's, as digits.
NUMBER_COLUMNS = """(
        recsync_digits(recordings.caller_number), recsync_digits(recordings.src),
        recsync_digits(recordings.dst), recsync_digits(recordings.cdr_dst),
        recsync_digits(recordings.did))"""
_MATCH = f"""(h.kind = 'number' AND h.value IN {NUMBER_COLUMNS})
    OR (h.kind = 'uniqueid' AND h.value IN (recordings.uniqueid, recordings.linkedid))
    OR (h.kind = 'day' AND h.value = substr(recordings.started_at, 1, 10))"""
HELD = f"EXISTS (SELECT 1 FROM holds h WHERE {_MATCH})"
_HELD_BY = f"EXISTS (SELECT 1 FROM holds h WHERE h.kind = ? AND h.value = ? AND ({_MATCH}))"


def register(conn: sqlite3.Connection) -> None:
    """The SQL function HELD needs, on every connection that asks it."""
    conn.create_function("recsync_digits", 1, digits, deterministic=True)


@dataclass(frozen=True)
class Hold:
    kind: str
    value: str
    created_at: float
    recordings: int  # how many recordings it covers now


class Holds:
    """The holds table over the store's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, kind: str, value: str, *, now: float) -> bool:
        """Hold what `value` names; False when that hold was there already."""
        normal = normalise(kind, value)
        with transaction(self.conn) as tx:
            added = tx.execute(
                "INSERT OR IGNORE INTO holds (kind, value, created_at) VALUES (?, ?, ?)",
                (kind, normal, now),
            ).rowcount
            if added:
                tx.event(None, now, "hold-added", f"{kind} {normal}")
        return bool(added)

    def remove(self, kind: str, value: str, *, now: float) -> bool:
        """Lift a hold; False when there was none."""
        normal = normalise(kind, value)
        with transaction(self.conn) as tx:
            removed = tx.execute(
                "DELETE FROM holds WHERE kind = ? AND value = ?", (kind, normal)
            ).rowcount
            if removed:
                tx.event(None, now, "hold-removed", f"{kind} {normal}")
        return bool(removed)

    def mirror(self, holds: list[Hold], *, now: float) -> None:
        """Hold exactly `holds` (another destination's state database's, the first's):
        a hold covers a call at every destination."""
        wanted = {(h.kind, h.value): h.created_at for h in holds}
        with transaction(self.conn) as tx:
            have = set(tx.execute("SELECT kind, value FROM holds").fetchall())
            for kind, value in have - set(wanted):
                tx.execute("DELETE FROM holds WHERE kind = ? AND value = ?", (kind, value))
                tx.event(None, now, "hold-removed", f"{kind} {value}")
            for (kind, value), created_at in wanted.items():
                if (kind, value) not in have:
                    tx.execute(
                        "INSERT INTO holds (kind, value, created_at) VALUES (?, ?, ?)",
                        (kind, value, created_at),
                    )
                    tx.event(None, now, "hold-added", f"{kind} {value}")

    def all(self) -> list[Hold]:
        """Every hold, with the number of recordings each covers."""
        holds = []
        for kind, value, created_at in self.conn.execute(
            "SELECT kind, value, created_at FROM holds ORDER BY id"
        ).fetchall():
            (count,) = self.conn.execute(
                f"SELECT count(*) FROM recordings WHERE {_HELD_BY}", (kind, value)
            ).fetchone()
            holds.append(Hold(kind, value, float(created_at), int(count)))
        return holds

    def covers(self, rid: int) -> bool:
        """Whether a hold covers recording `rid` now (asked again just before a delete:
        a hold added by the CLI during a pass must win)."""
        found = self.conn.execute(
            f"SELECT 1 FROM recordings WHERE id = ? AND {HELD}", (rid,)
        ).fetchone()
        return found is not None
