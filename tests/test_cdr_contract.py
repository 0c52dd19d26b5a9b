"""One contract for every CdrSource: the same calls, the same answers, from MariaDB (real
server, FreePBX schema), SQLite and Asterisk's CSV file."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from agent.cdr import CdrQuery, CdrSource
from agent.cdr.csvfile import LAYOUTS, CsvCdr
from agent.cdr.mysql import MysqlCdr
from agent.cdr.sqlite import SqliteCdr
from agent.errors import ConfigError, TransientError
from tests.support.cdr import T0, SqliteCdrFile, cdr_row
from tests.support.mariadb import MariaDB

CSV_COLUMNS = LAYOUTS[21]  # with uniqueid, linkedid and sequence
HOSTILE = "<script>alert(1)</script> ../../etc \"q\" 'x'\x07\x1b[31m"


def query(
    uid: str | None,
    *,
    name: str = "",
    src: str | None = "1001",
    dst: str | None = "18005551234",
    at: datetime = T0,
) -> CdrQuery:
    return CdrQuery(
        recordingfiles=(name or f"out-x-{uid}.wav",),
        uniqueid=uid,
        started_at=at.astimezone(),
        src=src,
        dst=dst,
    )


class Backend(Protocol):
    has_did: bool
    has_recordingfile: bool

    def insert(self, row: dict[str, Any]) -> None: ...

    def source(self) -> CdrSource: ...

    def described(self) -> str:
        """What the source's `check()` must say of a working store."""
        ...


class MysqlBackend:
    has_did = has_recordingfile = True

    def __init__(self, db: MariaDB) -> None:
        self.db = db
        db.create_user("recsync", "s3cret")

    def insert(self, row: dict[str, Any]) -> None:
        self.db.insert_cdr(row)

    def described(self) -> str:
        return f"mysql recsync@socket {self.db.socket}/asteriskcdrdb.cdr"

    def source(self) -> CdrSource:
        return self.source_for()

    def source_for(
        self,
        table: str = "cdr",
        *,
        user: str = "recsync",
        password: str = "s3cret",
        tcp: bool = False,
    ) -> MysqlCdr:
        """A MysqlCdr on this server, through its socket or (`tcp`) 127.0.0.1."""
        return MysqlCdr(
            host="127.0.0.1" if tcp else "localhost",
            port=self.db.port if tcp else 0,
            socket=None if tcp else self.db.socket,
            user=user,
            password=password,
            database="asteriskcdrdb",
            table=table,
        )


class SqliteBackend(SqliteCdrFile):
    has_did = has_recordingfile = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder / "master.db")

    def source(self) -> CdrSource:
        return SqliteCdr(path=self.path, table="cdr")

    def described(self) -> str:
        return f'sqlite {self.path} table "cdr"'


class CsvBackend:
    """Master.csv with uniqueid, linkedid and sequence (21 fields); no did, no cnum/cnam."""

    has_did = has_recordingfile = False

    def __init__(self, folder: Path) -> None:
        self.path = folder / "Master.csv"
        self.path.touch()

    def insert(self, row: dict[str, Any]) -> None:
        start = f"{row['calldate']:%Y-%m-%d %H:%M:%S}"
        values = row | {"start": start, "answer": start, "end": start}
        with self.path.open("a", newline="") as fh:
            csv.writer(fh, quoting=csv.QUOTE_ALL).writerow([values.get(c, "") for c in CSV_COLUMNS])

    def source(self) -> CdrSource:
        return CsvCdr(path=self.path)

    def described(self) -> str:
        rows = len(self.path.read_text().splitlines())
        return f"csv {self.path} (21 columns, with uniqueid and linkedid; {rows} indexed)"


def linked(source: CdrSource, uniqueid: str) -> str | None:
    """The linkedid of the row that answered a lookup of `uniqueid` (None: no row did)."""
    info = source.lookup(query(uniqueid))
    return None if info is None else info.linkedid


@pytest.fixture(params=["mysql", "sqlite", "csv"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "mysql":
        return MysqlBackend(request.getfixturevalue("cdr_db"))
    return SqliteBackend(tmp_path) if request.param == "sqlite" else CsvBackend(tmp_path)


@pytest.fixture
def source(backend: Backend) -> Iterator[CdrSource]:
    opened = backend.source()
    yield opened
    opened.close()


def test_outbound_call(backend: Backend, source: CdrSource) -> None:
    backend.insert(cdr_row("1710497702.42"))
    info = source.lookup(query("1710497702.42"))
    assert info is not None
    assert (info.caller_number, info.caller_name) == ("1001", "Front Desk")
    assert (info.dst, info.linkedid) == ("18005551234", "1710497702.42")
    assert (info.duration, info.billsec, info.disposition) == (95, 90, "ANSWERED")


def test_inbound_call_has_its_did(backend: Backend, source: CdrSource) -> None:
    backend.insert(
        cdr_row(
            "1710497853.51",
            clid='"Bob Buyer" <2125550100>',
            src="2125550100",
            cnum="2125550100",
            cnam="Bob Buyer",
            dst="600",
            did="2125550100",
        )
    )
    info = source.lookup(query("1710497853.51", src="2125550100", dst="2125550100"))
    assert info is not None
    assert (info.caller_number, info.caller_name) == ("2125550100", "Bob Buyer")
    assert info.did == ("2125550100" if backend.has_did else None)


def test_queue_agent_leg_finds_the_caller_through_linkedid(
    backend: Backend, source: CdrSource
) -> None:
    # The caller's row and the agent's leg: different uniqueids, one linkedid.
    backend.insert(
        cdr_row(
            "1710497900.10",
            clid='"Dana Customer" <2125550142>',
            src="2125550142",
            cnum="2125550142",
            cnam="Dana Customer",
            dst="600",
        )
    )
    backend.insert(
        cdr_row(
            "1710497905.11",
            at=T0 + timedelta(seconds=5),
            linkedid="1710497900.10",
            clid='"Agent 1002" <1002>',
            src="1002",
            cnum="1002",
            cnam="Agent 1002",
            dst="1002",
            sequence=2,
        )
    )
    info = source.lookup(query("1710497905.11", src="2125550142", dst="600"))
    assert info is not None
    assert (info.caller_number, info.caller_name) == ("2125550142", "Dana Customer")
    assert info.dst == "1002"  # the recording's own leg
    assert info.linkedid == "1710497900.10"


def test_transfer_earliest_row_gives_the_caller(backend: Backend, source: CdrSource) -> None:
    later = cdr_row(
        "1710498000.20",
        at=T0 + timedelta(seconds=30),
        clid='"Transferee" <1003>',
        src="1003",
        cnum="1003",
        cnam="Transferee",
        sequence=7,
    )
    first = cdr_row(
        "1710498000.20",
        clid='"Original Caller" <2125550111>',
        src="2125550111",
        cnum="2125550111",
        cnam="Original Caller",
        sequence=6,
    )
    backend.insert(later)  # written in the other order: the earliest still wins
    backend.insert(first)
    info = source.lookup(query("1710498000.20"))
    assert info is not None
    assert (info.caller_number, info.caller_name) == ("2125550111", "Original Caller")


def test_not_there_yet_then_there(backend: Backend, source: CdrSource) -> None:
    # A late row (CDR batch mode): "not found" is never cached.
    assert source.lookup(query("1710498100.30")) is None
    backend.insert(cdr_row("1710498100.30"))
    assert linked(source, "1710498100.30") == "1710498100.30"


def test_other_calls_do_not_match(backend: Backend, source: CdrSource) -> None:
    backend.insert(cdr_row("1710498200.40"))
    assert source.lookup(query("1710498200.41")) is None


def test_hostile_text_comes_back_verbatim(backend: Backend, source: CdrSource) -> None:
    backend.insert(cdr_row("1710498300.50", clid=f'"{HOSTILE}" <1001>', cnam=HOSTILE))
    info = source.lookup(query("1710498300.50"))
    assert info is not None
    assert info.caller_name == HOSTILE


def test_check_describes_a_working_source(backend: Backend, source: CdrSource) -> None:
    backend.insert(cdr_row("1710498400.60"))
    assert source.check() == backend.described()  # what doctor shows: the store it reads


# --- what only some stores have -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["mysql", "sqlite"], indirect=True)
def test_recordingfile_matches_before_uniqueid(backend: Backend, source: CdrSource) -> None:
    name = "out-18005551234-1001-20240315-101502-1710497702.42.wav"
    backend.insert(cdr_row("1710497702.1", recordingfile=name, cnam="By File"))
    backend.insert(cdr_row("1710497702.42", cnam="By Uniqueid", linkedid="other"))
    info = source.lookup(query("1710497702.42", name=name))
    assert info is not None and info.caller_name == "By File"


@pytest.mark.parametrize("backend", ["mysql", "sqlite"], indirect=True)
def test_any_of_the_recordingfile_variants_matches(backend: Backend, source: CdrSource) -> None:
    # On-demand recordings: the CDR says .wav49 where the disk has .WAV.
    stem = "ondemand-1004-1001-20240315-101502-9.1"
    backend.insert(cdr_row("9.1", recordingfile=f"{stem}.wav49", linkedid="other"))
    found = CdrQuery(
        recordingfiles=(f"{stem}.WAV", f"{stem}.wav49"),
        uniqueid=None,
        started_at=T0.astimezone(),
        src=None,
        dst=None,
    )
    info = source.lookup(found)
    assert info is not None and info.linkedid == "other"


@pytest.fixture
def mysql_backend(cdr_db: MariaDB) -> MysqlBackend:
    return MysqlBackend(cdr_db)


def test_mysql_old_table_without_linkedid_works(mysql_backend: MysqlBackend) -> None:
    db = mysql_backend.db
    db.insert_cdr(
        {
            "calldate": T0,
            "clid": '"Old Caller" <2125550000>',
            "src": "2125550000",
            "dst": "600",
            "uniqueid": "1213900512.123",
            "disposition": "ANSWERED",
        },
        table="cdr_old",
    )
    source = mysql_backend.source_for("cdr_old")
    try:
        assert "old table without cnam, cnum, linkedid, recordingfile" in source.check()
        info = source.lookup(query("1213900512.123"))
        assert info is not None
        assert (info.caller_number, info.caller_name) == ("2125550000", "Old Caller")
    finally:
        source.close()


def test_mysql_missing_table_is_named(mysql_backend: MysqlBackend) -> None:
    source = mysql_backend.source_for("cdr_nope")
    with pytest.raises(ConfigError, match=r"asteriskcdrdb\.cdr_nope does not exist"):
        source.check()


def test_mysql_over_tcp(mysql_backend: MysqlBackend) -> None:
    mysql_backend.insert(cdr_row("1710498500.70"))
    source = mysql_backend.source_for(tcp=True)
    try:
        assert linked(source, "1710498500.70") == "1710498500.70"
    finally:
        source.close()


def test_mysql_read_only_user_gets_no_advice_others_do(mysql_backend: MysqlBackend) -> None:
    db = mysql_backend.db
    db.create_user("freepbxuser", "pw", grants="ALL PRIVILEGES")
    for user, password, advised in (("recsync", "s3cret", False), ("freepbxuser", "pw", True)):
        source = mysql_backend.source_for(user=user, password=password)
        try:
            advice = source.advice()
        finally:
            source.close()
        assert bool(advice) is advised
        if advised:
            assert any("GRANT SELECT ON asteriskcdrdb.*" in line for line in advice)


def test_mysql_connection_loss_is_transient_then_reconnects(mysql_backend: MysqlBackend) -> None:
    db = mysql_backend.db
    mysql_backend.insert(cdr_row("1710498600.80"))
    source = mysql_backend.source()
    try:
        assert linked(source, "1710498600.80") == "1710498600.80"
        db.stop()
        try:
            with pytest.raises(TransientError):
                source.lookup(query("1710498600.80"))
            with pytest.raises(TransientError):  # still down: a clean error, no leak
                source.lookup(query("1710498600.80"))
        finally:
            db.start()
        assert linked(source, "1710498600.80") == "1710498600.80"
    finally:
        source.close()


def test_sqlite_admin_mapping_without_uniqueid_matches_by_time_and_numbers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "master.db"
    with sqlite3.connect(path) as conn:  # cdr_sqlite3_custom with a minimal mapping
        conn.execute("CREATE TABLE cdr (calldate, clid, src, dst, duration, billsec, disposition)")
        conn.execute(
            "INSERT INTO cdr VALUES ('2024-03-15 10:15:03', '\"Near\" <1001>', '1001',"
            " '18005551234', 10, 8, 'ANSWERED')"
        )
    source = SqliteCdr(path=path, table="cdr")
    try:
        info = source.lookup(query(None))
        assert info is not None and info.caller_name == "Near"
        assert source.lookup(query(None, dst="18005550000")) is None  # wrong number
        assert source.lookup(query(None, at=T0 + timedelta(seconds=4))) is None  # too far
    finally:
        source.close()
