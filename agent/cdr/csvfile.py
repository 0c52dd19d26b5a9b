"""Asterisk's cdr_csv Master.csv (or a cdr_custom file), tailed into a small in-memory index.

The file has no header and grows for years, so it is read like `tail -F`: only the bytes
appended since the last lookup, following a rename (rotation) or truncation back to the
start of the new file, and keeping only the rows of the last `keep_days`.
"""

from __future__ import annotations

import csv
import heapq
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from agent.cdr import CdrQuery, split_clid
from agent.cdr.rows import COLUMNS, CdrRow, call_info
from agent.errors import ConfigError, TransientError
from agent.model import CallInfo

_BASE = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
    "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
)  # fmt: skip
LAYOUTS: dict[int, tuple[str, ...]] = {
    16: _BASE,
    18: (*_BASE, "uniqueid", "userfield"),
    21: (*_BASE, "uniqueid", "userfield", "peeraccount", "linkedid", "sequence"),
}
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
WINDOW = timedelta(seconds=2)  # how far a CDR's start may be from the file name's time
CHUNK = 1 << 20
# A record still open (odd count of quotes) after this many lines or bytes was cut short
# (a crash mid-write): its first line is dropped so the rows after it are read again.
MAX_RECORD_LINES = 64
MAX_RECORD_BYTES = 64 << 10
_TAIL = 64  # bytes before the offset remembered to notice a file rewritten in place
# A file this large is first read from near its end: from a line whose call started more
# than keep_days + _MARGIN before the file's last rows (rows are appended about in order).
SKIP_FROM = 8 << 20
BLOCK = 1 << 20
_MARGIN = timedelta(days=1)
_PROBE_LINES = 200
_ALIASES = {"start": "calldate"}
_INTS = {"duration", "billsec", "sequence"}

_Plan = tuple[tuple[int, str], ...]  # (field index, CdrRow attribute)


def _plan(columns: Sequence[str]) -> _Plan:
    pairs = [(i, _ALIASES.get(name, name)) for i, name in enumerate(columns)]
    return tuple((i, attr) for i, attr in pairs if attr in COLUMNS)


def _order(row: CdrRow) -> tuple[datetime, int]:
    return (row.calldate or datetime.max, row.sequence or 0)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _fields(raw: bytes) -> list[str] | None:
    """One record's fields; text that is not UTF-8 is kept with U+FFFD in its place."""
    try:
        (fields,) = csv.reader([raw.decode("utf-8", "replace")])
    except (csv.Error, ValueError):
        return None
    return fields


def _date(text: str) -> datetime | None:
    """DATE_FORMAT, strictly; without strptime, which would take most of a first read."""
    if len(text) != 19 or text[10] + text[13] + text[16] != " ::" or not text[:4].isdigit():
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is None else None


def _checked_columns(columns: Sequence[str]) -> _Plan:
    plan = _plan(columns)
    attrs = [attr for _, attr in plan]
    if dupes := sorted({a for a in attrs if attrs.count(a) > 1}):
        raise ConfigError(f"cdr.columns: {', '.join(dupes)} named more than once")
    if "calldate" not in attrs:
        raise ConfigError("cdr.columns: must name the `start` column (the call's start time)")
    if "src" not in attrs and "clid" not in attrs:
        raise ConfigError("cdr.columns: must name `src` or `clid` (the caller)")
    return plan


class CsvCdr:
    """The CdrSource over a CSV file of CDRs; see the module docstring.

    Without `columns` each row's layout is chosen by its field count (LAYOUTS); with
    them (config `cdr.columns`) every row must have exactly that many fields. Rows of
    another count are skipped, and `check` says so.
    """

    name = "csv"

    def __init__(self, *, path: Path, columns: Sequence[str] = (), keep_days: float = 3) -> None:
        self.path = path
        self.columns = tuple(columns)
        if not keep_days > 0:
            raise ConfigError(f"CsvCdr keep_days must be positive, got {keep_days!r}")
        self.keep = timedelta(days=keep_days)
        self._plans: dict[int, _Plan] = (
            {len(self.columns): _checked_columns(self.columns)}
            if self.columns
            else {width: _plan(names) for width, names in LAYOUTS.items()}
        )
        self.offset = 0  # bytes of the current file read into the index
        self._file: IO[bytes] | None = None
        self._ident: tuple[int, int] | None = None
        self._tail = b""
        self._last_width: int | None = None  # field count of the last record read
        self.skipped = 0  # records not understood (field count, start time)
        self._newest: datetime | None = None
        self._ceiling = datetime.max  # a start later than this is a clock error, not "newest"
        self._heap: list[tuple[datetime, int, CdrRow]] = []
        self._count = 0
        self._rows: set[CdrRow] = set()
        self._by_uid: dict[str, list[CdrRow]] = {}
        self._by_linkedid: dict[str, list[CdrRow]] = {}
        self._by_file: dict[str, list[CdrRow]] = {}
        self._by_start: dict[datetime, list[CdrRow]] = {}

    # --- the CdrSource contract

    def lookup(self, query: CdrQuery) -> CallInfo | None:
        self._refresh()
        matched = self._match(query)
        if not matched:
            return None
        linked = {row.linkedid for row in matched if row.linkedid}
        group = [row for lid in linked for row in self._by_linkedid.get(lid, ())]
        return call_info(matched, [*matched, *group])

    def check(self) -> str:
        try:
            self._refresh()
        except TransientError as exc:
            hint = (
                "the agent's user needs read access (e.g. the asterisk group)"
                if isinstance(exc.__cause__, PermissionError)
                else "is Asterisk's cdr_csv module loaded? set cdr.path to the CSV file"
            )
            raise ConfigError(f"cdr.path: {exc}; {hint}") from exc
        width = self._last_width
        if self.columns and width is not None and width != len(self.columns):
            raise ConfigError(
                f"cdr.columns names {len(self.columns)} columns but the last row of "
                f"{self.path} has {width} fields"
            )
        if not self.columns and width is not None and width not in LAYOUTS:
            raise ConfigError(
                f"{self.path}: rows have {width} fields, which is not a cdr_csv layout "
                "(16, 18 or 21 fields); set cdr.columns to name the fields in order"
            )
        if width is None:
            layout = "no rows yet"
        else:
            attrs = {attr for _, attr in self._plans[width]}
            has = [name for name in ("uniqueid", "linkedid", "recordingfile") if name in attrs]
            extra = (
                f"with {' and '.join(has)}" if has else "no uniqueid: matched by time and number"
            )
            source = "cdr.columns: " if self.columns else ""
            layout = f"{source}{width} columns, {extra}"
        if self.skipped:
            layout += f"; {self.skipped} rows skipped"
        return f"csv {self.path} ({layout})"

    def advice(self) -> list[str]:
        """What to change in cdr_csv.conf so calls are matched exactly, not by time."""
        if self._ident is None:
            try:
                self._refresh()
            except TransientError:
                return []
        if self.columns or self._last_width not in LAYOUTS:
            return []
        if self._last_width == 16:
            return [
                f"{self.path} has no uniqueid: calls are matched by start time and number;"
                " set loguniqueid=yes, loguserfield=yes and newcdrcolumns=yes in"
                " /etc/asterisk/cdr_csv.conf"
            ]
        if self._last_width == 18:
            return [
                f"{self.path} has no linkedid: the legs of a queued or transferred call are"
                " not joined; set newcdrcolumns=yes in /etc/asterisk/cdr_csv.conf"
            ]
        return []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # --- matching

    def _match(self, query: CdrQuery) -> list[CdrRow]:
        by_file = [row for name in query.recordingfiles for row in self._by_file.get(name, ())]
        if by_file:
            return sorted(set(by_file), key=_order)
        if query.uniqueid:
            own = self._by_uid.get(query.uniqueid, [])
            legs = [row for row in self._by_linkedid.get(query.uniqueid, ()) if row not in own]
            if own or legs:
                return sorted(own, key=_order) + sorted(legs, key=_order)
        # Rows that have a uniqueid are another call's when the query's is not theirs.
        return self._near(query, without_uid=bool(query.uniqueid))

    def _near(self, query: CdrQuery, *, without_uid: bool) -> list[CdrRow]:
        start = query.local_start
        second = start.replace(microsecond=0)
        found: list[tuple[timedelta, CdrRow]] = []
        for step in range(-3, 4):
            for row in self._by_start.get(second + timedelta(seconds=step), ()):
                assert row.calldate is not None
                delta = abs(row.calldate - start)
                if delta > WINDOW or (without_uid and row.uniqueid):
                    continue
                if query.src is not None and query.src not in (row.src, split_clid(row.clid)[1]):
                    continue
                if query.dst is not None and query.dst != row.dst:
                    continue
                found.append((delta, row))
        found.sort(key=lambda pair: (pair[0], _order(pair[1])))
        return [row for _, row in found]

    # --- reading

    def _refresh(self) -> None:
        """Read what was appended; follow a rotation to the new file's start."""
        try:
            if self._file is not None:
                self._drain(self._file)  # rows written to the old file before a rename
            st = os.stat(self.path)
            if self._file is None or (st.st_dev, st.st_ino) != self._ident:
                self.close()
                self._file = open(self.path, "rb")  # noqa: SIM115 - kept open to follow renames
                fst = os.fstat(self._file.fileno())
                self._ident = (fst.st_dev, fst.st_ino)
                self._restart()
                self._drain(self._file)
        except OSError as exc:
            raise TransientError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def _restart(self) -> None:
        self.offset = 0
        self._tail = b""

    def _drain(self, file: IO[bytes]) -> None:
        self._ceiling = datetime.now() + _MARGIN
        size = os.fstat(file.fileno()).st_size
        if size < self.offset:
            self._restart()  # truncated
        elif self._tail:
            file.seek(self.offset - len(self._tail))
            if file.read(len(self._tail)) != self._tail:
                self._restart()  # rewritten in place
        if self.offset == 0 and size >= SKIP_FROM:
            self.offset = self._skip_old(file, size)
        if size == self.offset:
            return
        file.seek(self.offset)
        pending = b""
        while chunk := file.read(CHUNK):
            pending += chunk
            used = self._consume(pending)
            if used:
                self._tail = pending[max(0, used - _TAIL) : used]
                pending = pending[used:]
                self.offset += used
                self._prune()

    def _skip_old(self, file: IO[bytes], size: int) -> int:
        """Where to begin reading a large file: every row before it would be dropped."""
        file.seek(max(0, size - BLOCK))
        last = self._first_start(file.read(BLOCK), aligned=False)
        if last is None:
            return 0
        horizon = min(last[1], self._ceiling) - self.keep - _MARGIN
        pos = size - BLOCK
        while pos > 0:
            pos = max(0, pos - BLOCK)
            file.seek(pos)
            found = self._first_start(file.read(BLOCK), aligned=pos == 0)
            if found is not None and found[1] < horizon:
                return pos + found[0]
        return 0

    def _first_start(self, block: bytes, *, aligned: bool) -> tuple[int, datetime] | None:
        """The first line of `block` that is a whole record, and its start time. Unless
        `aligned`, the block's first line is taken to be the end of an earlier one."""
        pos = 0 if aligned else block.find(b"\n") + 1
        if pos == 0 and not aligned:
            return None
        for _ in range(_PROBE_LINES):
            end = block.find(b"\n", pos)
            if end < 0:
                return None
            raw = block[pos:end]
            if raw.count(b'"') % 2 == 0 and (fields := _fields(raw)) is not None:
                row = self._row(fields)
                if row is not None and row.calldate is not None:
                    return pos, row.calldate
            pos = end + 1
        return None

    def _consume(self, data: bytes) -> int:
        """Index the complete records at the start of `data`; return the bytes they take.

        A record ends at a newline outside quotes: cdr_csv doubles quotes inside fields,
        so the count of quotes is even there. A newline inside quotes belongs to a field.
        """
        start = pos = quotes = lines = 0
        while (newline := data.find(b"\n", pos)) >= 0:
            quotes += data.count(b'"', pos, newline)
            lines += 1
            pos = newline + 1
            if quotes % 2 == 0:
                self._add_record(data[start:newline])
                start, quotes, lines = pos, 0, 0
            elif lines > MAX_RECORD_LINES or pos - start > MAX_RECORD_BYTES:
                self.skipped += 1
                start = pos = data.index(b"\n", start) + 1
                quotes = lines = 0
        return start

    def _add_record(self, raw: bytes) -> None:
        if not raw.strip():
            return
        fields = _fields(raw)
        if fields is None:
            self.skipped += 1
            return
        self._last_width = len(fields)
        row = self._row(fields)
        if row is None:
            self.skipped += 1
        else:
            self._add(row)

    def _row(self, fields: list[str]) -> CdrRow | None:
        plan = self._plans.get(len(fields))
        if plan is None:
            return None
        values: dict[str, Any] = {}
        for index, attr in plan:
            text = fields[index]
            if attr == "calldate":
                if (start := _date(text)) is None:
                    return None
                values[attr] = start
            elif attr in _INTS:
                values[attr] = _int(text)
            else:
                values[attr] = text or None
        return CdrRow(**values)

    # --- the index

    def _indexes(self, row: CdrRow) -> Iterable[tuple[dict[Any, list[CdrRow]], object]]:
        yield self._by_uid, row.uniqueid
        yield self._by_linkedid, row.linkedid
        yield self._by_file, row.recordingfile
        yield self._by_start, row.calldate

    def _add(self, row: CdrRow) -> None:
        assert row.calldate is not None
        if (self._newest is None or row.calldate > self._newest) and row.calldate < self._ceiling:
            self._newest = row.calldate
        if row in self._rows or (self._newest and row.calldate < self._newest - self.keep):
            return
        self._rows.add(row)
        self._count += 1
        heapq.heappush(self._heap, (row.calldate, self._count, row))
        for index, key in self._indexes(row):
            if key is not None:
                index.setdefault(key, []).append(row)

    def _prune(self) -> None:
        """Forget rows that started more than keep_days before the newest row."""
        if self._newest is None:
            return
        cutoff = self._newest - self.keep
        while self._heap and self._heap[0][0] < cutoff:
            _, _, row = heapq.heappop(self._heap)
            self._rows.discard(row)
            for index, key in self._indexes(row):
                if key is not None:
                    bucket = index[key]
                    bucket.remove(row)
                    if not bucket:
                        del index[key]
