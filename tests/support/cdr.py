"""CDR rows for tests, a SQLite CDR file with FreePBX's columns, and what the agent knows
of a call once it has the row (the manifest fields)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

T0 = datetime(2024, 3, 15, 10, 15, 2)


def cdr_row(
    uid: str, *, at: datetime = T0, linkedid: str | None = None, **values: Any
) -> dict[str, Any]:
    """A FreePBX CDR row of an answered outbound call; `values` override the columns."""
    row = {
        "calldate": at,
        "clid": '"Front Desk" <1001>',
        "src": "1001",
        "dst": "18005551234",
        "cnum": "1001",
        "cnam": "Front Desk",
        "uniqueid": uid,
        "linkedid": linkedid or uid,
        "disposition": "ANSWERED",
        "duration": 95,
        "billsec": 90,
        "sequence": 1,
        "recordingfile": "",
        "did": "",
    }
    return row | values


def call_fields(**values: Any) -> dict[str, Any]:
    """The manifest fields of an answered incoming call with its CDR row (no file facts:
    no `file`, size or hash); `values` override them."""
    fields = {
        "original": "2024/03/15/in-600-2125550100-20240315-101502-1710497853.51.wav",
        "uniqueid": "1710497853.51",
        "linkedid": "1710497853.50",
        "kind": "in",
        "caller_number": "2125550100",
        "caller_name": "Bob Buyer",
        "dst": "600",
        "did": "2125550199",
        "started_at": "2024-03-15T10:15:02+01:00",
        "duration": 75,
        "billsec": 62,
        "disposition": "ANSWERED",
        "cdr": "found",
    }
    return fields | values


class SqliteCdrFile:
    """A `cdr` table with FreePBX's column names, as cdr_sqlite3_custom can write it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS cdr ({', '.join(cdr_row('x'))})")
        conn.close()

    def insert(self, row: dict[str, Any]) -> None:
        row = row | {"calldate": f"{row['calldate']:%Y-%m-%d %H:%M:%S}"}
        with sqlite3.connect(self.path) as conn:
            marks = ", ".join("?" * len(row))
            conn.execute(f"INSERT INTO cdr ({', '.join(row)}) VALUES ({marks})", list(row.values()))
        conn.close()
