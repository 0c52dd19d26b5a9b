"""Asterisk's `cdr_sqlite3_custom` store (`/var/log/asterisk/master.db`), read-only."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.cdr import CdrQuery
from agent.cdr.sql import SqlLookup
from agent.errors import ConfigError, TransientError
from agent.model import CallInfo

BUSY_TIMEOUT_SECONDS = 5


def _quote(name: str) -> str:
    return f'"{name}"'


class SqliteCdr:
    name = "sqlite"

    def __init__(self, *, path: Path, table: str) -> None:
        self.path, self.table = path, table
        self._conn: sqlite3.Connection | None = None
        self._lookup: SqlLookup | None = None

    def _connect(self) -> SqlLookup:
        if self._lookup is not None:
            return self._lookup
        if not self.path.exists():
            raise TransientError(f"CDR database {self.path} does not exist (yet)")
        try:
            # Several destinations' threads ask in turn (cdr.shared serialises them).
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_SECONDS,
                check_same_thread=False,
            )
            # The admin's column mapping decides which columns exist.
            info = conn.execute(f"PRAGMA table_info({_quote(self.table)})").fetchall()
        except sqlite3.DatabaseError as exc:
            raise TransientError(f"CDR database {self.path}: {exc}") from exc
        if not info:
            conn.close()
            raise ConfigError(f"CDR table {self.table!r} does not exist in {self.path}")
        self._conn = conn
        self._lookup = SqlLookup(
            table=self.table,
            columns={str(r[1]).lower() for r in info},
            run=self._run,
            mark="?",
            quote=_quote,
        )
        return self._lookup

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        return self._conn.execute(sql, list(params)).fetchall()

    def lookup(self, query: CdrQuery) -> CallInfo | None:
        lookup = self._connect()
        try:
            return lookup.lookup(query)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise TransientError(f"CDR database {self.path}: {exc}") from exc

    def check(self) -> str:
        return f"sqlite {self.path} table {self._connect().table}"

    def advice(self) -> list[str]:
        return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._lookup = None
