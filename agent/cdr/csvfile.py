"""Asterisk's cdr_csv Master.csv (or a cdr_custom file), followed into an indexed SQLite file.

The file has no header and grows for years, so it is read like `tail -F`: only the bytes
appended since the last lookup, following a rename (rotation) or truncation back to the
start of the new file. Every row goes into a small SQLite index (in the state folder),
so a lookup finds a call of any age — `recsync backfill` of last year's calls too — with
memory that does not grow with the file; the index remembers how far it read, so a
restart reads only what was appended meanwhile. Rows of a rotated file stay indexed.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from agent.cdr import CdrQuery, split_clid
from agent.cdr.rows import COLUMNS, CdrRow, by_time, call_info
from agent.errors import ConfigError, TransientError
from agent.model import CallInfo
from agent.secrets import give_to_folder_owner

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
_ALIASES = {"start": "calldate"}
_INTS = {"duration", "billsec", "sequence"}

_Plan = tuple[tuple[int, str], ...]  # (field index, CdrRow attribute)


def _plan(columns: Sequence[str]) -> _Plan:
    pairs = [(i, _ALIASES.get(name, name)) for i, name in enumerate(columns)]
    return tuple((i, attr) for i, attr in pairs if attr in COLUMNS)


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


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cdr (key BLOB PRIMARY KEY, calldate TEXT NOT NULL,"
    f" {', '.join(c for c in COLUMNS if c != 'calldate')}) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS cdr_uniqueid ON cdr (uniqueid) WHERE uniqueid IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS cdr_linkedid ON cdr (linkedid) WHERE linkedid IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS cdr_file ON cdr (recordingfile) WHERE recordingfile IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS cdr_calldate ON cdr (calldate)",
    # Where reading stopped: the file's identity, the offset, the bytes just before it.
    "CREATE TABLE IF NOT EXISTS follow (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER,"
    " offset INTEGER, tail BLOB, width INTEGER, skipped INTEGER)",
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM cdr"


def _stored(row: CdrRow) -> list[Any]:
    values: list[Any] = [getattr(row, c) for c in COLUMNS]
    values[COLUMNS.index("calldate")] = str(row.calldate)
    return values


def _loaded(values: Sequence[Any]) -> CdrRow:
    row = dict(zip(COLUMNS, values, strict=True))
    row["calldate"] = datetime.fromisoformat(row["calldate"])
    return CdrRow(**row)


class CsvCdr:
    """The CdrSource over a CSV file of CDRs; see the module docstring.

    Without `columns` each row's layout is chosen by its field count (LAYOUTS); with
    them (config `cdr.columns`) every row must have exactly that many fields. Rows of
    another count are skipped, and `check` says so. `index` is the SQLite file rows go
    into (None: one in memory, for a single run).
    """

    name = "csv"

    def __init__(
        self, *, path: Path, columns: Sequence[str] = (), index: Path | None = None
    ) -> None:
        self.path = path
        self.columns = tuple(columns)
        self._plans: dict[int, _Plan] = (
            {len(self.columns): _checked_columns(self.columns)}
            if self.columns
            else {width: _plan(names) for width, names in LAYOUTS.items()}
        )
        self.index_path = index
        self._db: sqlite3.Connection | None = None
        self.offset = 0  # bytes of the current file read into the index
        self._file: IO[bytes] | None = None
        self._ident: tuple[int, int] | None = None
        self._tail = b""
        self._last_width: int | None = None  # field count of the last record read
        self.skipped = 0  # records not understood (field count, start time)
        self._batch: list[list[Any]] = []

    # --- the CdrSource contract

    def lookup(self, query: CdrQuery) -> CallInfo | None:
        self._refresh()
        matched = self._match(query)
        if not matched:
            return None
        linked = sorted({row.linkedid for row in matched if row.linkedid})
        group = self._rows(f"linkedid IN ({','.join('?' * len(linked))})", linked)
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
        if width is not None:
            layout += f"; {self.indexed()} indexed"
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
        self.close_file()
        if self._db is not None:
            self._db.close()
            self._db = None

    def indexed(self) -> int:
        """How many rows the index holds."""
        return int(self._index().execute("SELECT count(*) FROM cdr").fetchone()[0])

    # --- matching

    def _rows(self, where: str, params: Sequence[Any]) -> list[CdrRow]:
        sql = f"{_SELECT} WHERE {where} ORDER BY calldate, sequence"
        return [_loaded(values) for values in self._index().execute(sql, list(params))]

    def _match(self, query: CdrQuery) -> list[CdrRow]:
        names = list(query.recordingfiles)
        by_file = self._rows(f"recordingfile IN ({','.join('?' * len(names))})", names)
        if by_file:
            return by_file
        if query.uniqueid:
            own = self._rows("uniqueid = ?", [query.uniqueid])
            legs = [r for r in self._rows("linkedid = ?", [query.uniqueid]) if r not in own]
            if own or legs:
                return own + legs
        # Rows that have a uniqueid are another call's when the query's is not theirs.
        return self._near(query, without_uid=bool(query.uniqueid))

    def _near(self, query: CdrQuery, *, without_uid: bool) -> list[CdrRow]:
        start = query.local_start
        second = start.replace(microsecond=0)
        span = (str(second - timedelta(seconds=3)), str(second + timedelta(seconds=3)))
        found: list[tuple[timedelta, CdrRow]] = []
        for row in self._rows("calldate BETWEEN ? AND ?", span):
            assert row.calldate is not None
            delta = abs(row.calldate - start)
            if delta > WINDOW or (without_uid and row.uniqueid):
                continue
            if query.src is not None and query.src not in (row.src, split_clid(row.clid)[1]):
                continue
            if query.dst is not None and query.dst != row.dst:
                continue
            found.append((delta, row))
        found.sort(key=lambda pair: (pair[0], by_time(pair[1])))
        return [row for _, row in found]

    # --- the index file

    def _index(self) -> sqlite3.Connection:
        if self._db is None:
            target = ":memory:" if self.index_path is None else str(self.index_path)
            try:
                # Several destinations' threads ask in turn (cdr.shared serialises them).
                db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # a lost tail is read again
                for statement in _SCHEMA:
                    db.execute(statement)
                if self.index_path is not None:
                    give_to_folder_owner(self.index_path)  # run as root, still the agent's
            except (sqlite3.Error, OSError) as exc:
                raise TransientError(f"cannot open the CSV index {target}: {exc}") from exc
            self._db = db
            self._resume(db)
        return self._db

    def _resume(self, db: sqlite3.Connection) -> None:
        """Where the last run stopped reading, if the file is still the same one."""
        found = db.execute(
            "SELECT dev, ino, offset, tail, width, skipped FROM follow WHERE path = ?",
            (str(self.path),),
        ).fetchone()
        if found is not None:
            dev, ino, self.offset, self._tail, self._last_width, self.skipped = found
            self._ident = (dev, ino)

    def _save(self) -> None:
        """The read rows and how far they go, in one transaction: a crash between the
        two would otherwise skip rows or read them twice (they are deduplicated anyway)."""
        db = self._index()
        assert self._ident is not None
        try:
            db.execute("BEGIN")
            db.executemany(
                f"INSERT OR IGNORE INTO cdr (key, {', '.join(COLUMNS)})"
                f" VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
                self._batch,
            )
            db.execute(
                "INSERT OR REPLACE INTO follow VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(self.path), *self._ident, self.offset, self._tail, self._last_width,
                 self.skipped),
            )  # fmt: skip
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise TransientError(f"cannot write the CSV index: {exc}") from exc
        finally:
            self._batch = []

    # --- reading

    def _refresh(self) -> None:
        """Read what was appended; follow a rotation to the new file's start."""
        self._index()
        try:
            if self._file is not None:
                self._drain(self._file)  # rows written to the old file before a rename
            st = os.stat(self.path)
            if self._file is None or (st.st_dev, st.st_ino) != self._ident:
                fresh = (st.st_dev, st.st_ino) != self._ident  # not the file read last run
                self.close_file()
                self._file = open(self.path, "rb")  # noqa: SIM115 - kept open to follow renames
                fst = os.fstat(self._file.fileno())
                self._ident = (fst.st_dev, fst.st_ino)
                if fresh:
                    self._restart()
                self._drain(self._file)
        except OSError as exc:
            raise TransientError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _restart(self) -> None:
        self.offset = 0
        self._tail = b""

    def _drain(self, file: IO[bytes]) -> None:
        size = os.fstat(file.fileno()).st_size
        if size < self.offset:
            self._restart()  # truncated
        elif self._tail:
            file.seek(self.offset - len(self._tail))
            if file.read(len(self._tail)) != self._tail:
                self._restart()  # rewritten in place
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
                self._save()

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
        else:  # the same record read twice (a file rewritten, rotated back) counts once
            self._batch.append([hashlib.blake2b(raw, digest_size=16).digest(), *_stored(row)])

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
