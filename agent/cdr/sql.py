"""The lookup FreePBX itself does, over any SQL `cdr` table (MariaDB or SQLite).

CdrRow's field names are FreePBX's column names, so they are what is selected.
Columns are probed once: old tables without linkedid, cnum, cnam or recordingfile work
with what they have. Queries are parameterised; only the probed column names and the
validated table name are spliced in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from agent.cdr import CdrQuery
from agent.cdr.rows import COLUMNS, CdrRow, by_time, call_info
from agent.model import CallInfo

# Without recordingfile or uniqueid columns, a row matches by its start time within this.
TIME_WINDOW = timedelta(seconds=2)
# Every leg of a call starts within this of the time in the recording's name.
CALL_SPAN = timedelta(days=1)

Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value)


def _date(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


class SqlLookup:
    """`run(sql, params)` executes one query and returns its rows; `mark` is the driver's
    placeholder ("%s" for PyMySQL, "?" for sqlite3); `quote` quotes an identifier."""

    def __init__(
        self, *, table: str, columns: set[str], run: Run, mark: str, quote: Callable[[str], str]
    ) -> None:
        self.table = quote(table)
        self.columns = columns
        self.run = run
        self.mark = mark
        self.select = ", ".join(quote(c) if c in columns else "NULL" for c in COLUMNS)

    def _rows(self, where: str, params: Sequence[Any]) -> list[CdrRow]:
        sql = f"SELECT {self.select} FROM {self.table} WHERE {where}"
        return [_to_row(values) for values in self.run(sql, params)]

    def _in(self, column: str, values: Sequence[Any]) -> str:
        return f"{column} IN ({', '.join([self.mark] * len(values))})"

    def lookup(self, query: CdrQuery) -> CallInfo | None:
        matched = self._matched(query)
        if not matched:
            return None
        group = matched
        linkedids = sorted({r.linkedid for r in matched if r.linkedid})
        if linkedids and "linkedid" in self.columns:
            near, params = self._near(query)
            group = self._rows(f"{self._in('linkedid', linkedids)}{near}", [*linkedids, *params])
        return call_info(matched, group)

    def _near(self, query: CdrQuery) -> tuple[str, list[str]]:
        """A calldate range around the call, ANDed to uniqueid/linkedid lookups: many
        FreePBX tables have no linkedid index, and `x OR linkedid` would scan them all."""
        if "calldate" not in self.columns:
            return "", []
        start = query.local_start
        return f" AND calldate BETWEEN {self.mark} AND {self.mark}", _between(start, CALL_SPAN)

    def _matched(self, query: CdrQuery) -> list[CdrRow]:
        """The rows naming this recording, in FreePBX's order of trust."""
        if "recordingfile" in self.columns:
            files = list(query.recordingfiles)
            found = self._rows(self._in("recordingfile", files), files)
            if found:
                return sorted(found, key=by_time)
        ids = [c for c in ("uniqueid", "linkedid") if c in self.columns]
        if query.uniqueid and ids:
            near, params = self._near(query)
            where = " OR ".join(f"{c} = {self.mark}" for c in ids)
            found = self._rows(f"({where}){near}", [*[query.uniqueid] * len(ids), *params])
            # The recording's own leg (uniqueid equal) before the others of its call.
            return sorted(found, key=lambda r: (r.uniqueid != query.uniqueid, *by_time(r)))
        if "calldate" not in self.columns:
            return []
        start = query.local_start
        found = self._rows(
            f"calldate BETWEEN {self.mark} AND {self.mark}", _between(start, TIME_WINDOW)
        )
        fitting = [r for r in found if _numbers_fit(r, query)]
        return sorted(fitting, key=lambda r: abs((r.calldate or start) - start))


def _to_row(values: tuple[Any, ...]) -> CdrRow:
    data = dict(zip(COLUMNS, values, strict=True))
    return CdrRow(
        calldate=_date(data["calldate"]),
        duration=_int(data["duration"]),
        billsec=_int(data["billsec"]),
        sequence=_int(data["sequence"]),
        **{
            name: _text(data[name])
            for name in COLUMNS
            if name not in ("calldate", "duration", "billsec", "sequence")
        },
    )


def _between(start: datetime, span: timedelta) -> list[str]:
    # As text: both MariaDB's DATETIME and SQLite's text dates compare with it.
    return [f"{t:%Y-%m-%d %H:%M:%S}" for t in (start - span, start + span)]


def _numbers_fit(row: CdrRow, query: CdrQuery) -> bool:
    src_ok = query.src is None or query.src in (row.src, row.cnum)
    dst_ok = query.dst is None or query.dst == row.dst
    return src_ok and dst_ok
