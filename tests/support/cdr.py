"""CDR rows for tests, and a SQLite CDR file with FreePBX's columns."""

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
