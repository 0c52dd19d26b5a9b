"""The MariaDB test server itself: it starts, has FreePBX's schema, and survives a restart."""

from __future__ import annotations

import pymysql
import pytest

from tests.support.mariadb import CDR_DATABASE, MariaDB, split_sql

FREEPBX_COLUMNS = [
    ("calldate", "datetime"),
    ("clid", "varchar(80)"),
    ("src", "varchar(80)"),
    ("dst", "varchar(80)"),
    ("dcontext", "varchar(80)"),
    ("channel", "varchar(80)"),
    ("dstchannel", "varchar(80)"),
    ("lastapp", "varchar(80)"),
    ("lastdata", "varchar(80)"),
    ("duration", "int(11)"),
    ("billsec", "int(11)"),
    ("disposition", "varchar(45)"),
    ("amaflags", "int(11)"),
    ("accountcode", "varchar(20)"),
    ("uniqueid", "varchar(32)"),
    ("userfield", "varchar(255)"),
    ("did", "varchar(50)"),
    ("recordingfile", "varchar(255)"),
    ("cnum", "varchar(80)"),
    ("cnam", "varchar(80)"),
    ("outbound_cnum", "varchar(80)"),
    ("outbound_cnam", "varchar(80)"),
    ("dst_cnam", "varchar(80)"),
    ("linkedid", "varchar(32)"),
    ("peeraccount", "varchar(80)"),
    ("sequence", "int(11)"),
]
OLD_COLUMNS = FREEPBX_COLUMNS[:16]


def columns(server: MariaDB, table: str) -> list[tuple[str, str]]:
    rows = server.execute(
        "SELECT column_name, column_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (CDR_DATABASE, table),
    )
    return [(name, kind) for name, kind in rows]


def indexes(server: MariaDB, table: str) -> dict[str, list[str]]:
    rows = server.execute(
        "SELECT index_name, column_name FROM information_schema.statistics"
        " WHERE table_schema = %s AND table_name = %s ORDER BY index_name, seq_in_index",
        (CDR_DATABASE, table),
    )
    found: dict[str, list[str]] = {}
    for index, column in rows:
        found.setdefault(index, []).append(column)
    return found


def test_server_runs_a_real_mariadb(cdr_db: MariaDB) -> None:
    assert cdr_db.is_running
    [(version,)] = cdr_db.execute("SELECT VERSION()")
    assert "MariaDB" in version
    assert cdr_db.start_seconds is not None
    assert cdr_db.start_seconds < 10


def test_cdr_table_has_the_freepbx_columns_in_order(cdr_db: MariaDB) -> None:
    assert columns(cdr_db, "cdr") == FREEPBX_COLUMNS


def test_cdr_table_has_the_freepbx_indexes_and_no_primary_key(cdr_db: MariaDB) -> None:
    assert indexes(cdr_db, "cdr") == {
        name: [name]
        for name in (
            "calldate",
            "dst",
            "accountcode",
            "uniqueid",
            "did",
            "recordingfile",
            "linkedid",
        )
    }


def test_old_schema_table_lacks_the_newer_columns(cdr_db: MariaDB) -> None:
    assert columns(cdr_db, "cdr_old") == OLD_COLUMNS
    assert indexes(cdr_db, "cdr_old") == {
        name: [name] for name in ("calldate", "dst", "accountcode")
    }


def test_omitted_columns_take_the_table_defaults(cdr_db: MariaDB) -> None:
    cdr_db.insert_cdr({"calldate": "2024-03-15 10:15:02", "uniqueid": "1710497702.42"})
    [(src, billsec, recordingfile)] = cdr_db.execute("SELECT src, billsec, recordingfile FROM cdr")
    assert (src, billsec, recordingfile) == ("", 0, "")


def test_cdr_db_starts_each_test_with_empty_tables(cdr_db: MariaDB) -> None:
    # Runs after the test above inserted a row.
    assert cdr_db.execute("SELECT COUNT(*) FROM cdr") == [(0,)]
    assert cdr_db.execute("SELECT COUNT(*) FROM cdr_old") == [(0,)]


def test_select_only_user_cannot_insert(cdr_db: MariaDB) -> None:
    cdr_db.create_user("cdrreader", "s3cret")
    cdr_db.insert_cdr({"uniqueid": "1.1", "src": "201"})
    reader = cdr_db.connect(CDR_DATABASE, user="cdrreader", password="s3cret")
    with reader, reader.cursor() as cursor:
        cursor.execute("SELECT src FROM cdr")
        assert cursor.fetchall() == (("201",),)
        with pytest.raises(pymysql.err.OperationalError) as denied:
            cursor.execute("INSERT INTO cdr (uniqueid) VALUES ('2.2')")
    assert denied.value.args[0] == 1142  # ER_TABLEACCESS_DENIED_ERROR
    with pytest.raises(pymysql.err.OperationalError):
        cdr_db.connect("mysql", user="cdrreader", password="s3cret").close()


def test_wrong_password_is_refused(cdr_db: MariaDB) -> None:
    cdr_db.create_user("cdrreader", "s3cret")
    with pytest.raises(pymysql.err.OperationalError) as refused:
        cdr_db.connect(CDR_DATABASE, user="cdrreader", password="wrong").close()
    assert refused.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR


@pytest.mark.parametrize("tcp", [False, True], ids=["socket", "tcp"])
def test_user_connects_through_socket_and_tcp(cdr_db: MariaDB, tcp: bool) -> None:
    cdr_db.create_user("cdrreader", "s3cret")
    reader = cdr_db.connect(CDR_DATABASE, "cdrreader", "s3cret", tcp=tcp)
    with reader, reader.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER()")
        [(current_user,)] = cursor.fetchall()
    assert current_user == ("cdrreader@127.0.0.1" if tcp else "cdrreader@localhost")


def test_stop_and_start_keep_the_data_and_the_address(cdr_db: MariaDB) -> None:
    socket_path, port = cdr_db.socket, cdr_db.port
    cdr_db.insert_cdr({"uniqueid": "1710497702.42", "recordingfile": "out-1.wav"})
    cdr_db.insert_cdr({"uniqueid": "1710497702.42"}, table="cdr_old")

    cdr_db.stop()
    assert not cdr_db.is_running
    with pytest.raises(pymysql.err.OperationalError):
        cdr_db.connect(connect_timeout=1).close()

    cdr_db.start()
    assert (cdr_db.socket, cdr_db.port) == (socket_path, port)
    assert cdr_db.execute("SELECT recordingfile FROM cdr") == [("out-1.wav",)]
    assert cdr_db.execute("SELECT uniqueid FROM cdr_old") == [("1710497702.42",)]


def test_a_killed_server_recovers_committed_rows(cdr_db: MariaDB) -> None:
    cdr_db.insert_cdr({"uniqueid": "1.1"})
    cdr_db.kill()
    cdr_db.start()
    assert cdr_db.execute("SELECT uniqueid FROM cdr") == [("1.1",)]


def test_split_sql_drops_comments_and_splits_at_line_ends() -> None:
    script = "-- a comment; with a semicolon\nDROP TABLE x;\nCREATE TABLE x (\n  a int\n);\n"
    assert split_sql(script) == ["DROP TABLE x", "CREATE TABLE x (\n  a int\n)"]
