"""CsvCdr against real Master.csv files written the way Asterisk's cdr_csv writes them."""

from __future__ import annotations

import csv
import io
import os
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cdr import CdrQuery, csvfile, split_clid
from agent.cdr.csvfile import LAYOUTS, CsvCdr
from agent.errors import ConfigError, TransientError

DEFAULTS = {
    "accountcode": "",
    "src": "201",
    "dst": "5551234",
    "dcontext": "from-internal",
    "clid": '"Alice" <201>',
    "channel": "PJSIP/201-00000001",
    "dstchannel": "PJSIP/trunk-00000002",
    "lastapp": "Dial",
    "lastdata": "PJSIP/5551234@trunk,300,Tt",
    "start": "2024-03-15 10:15:02",
    "answer": "2024-03-15 10:15:07",
    "end": "2024-03-15 10:15:32",
    "duration": "30",
    "billsec": "25",
    "disposition": "ANSWERED",
    "amaflags": "DOCUMENTATION",
    "uniqueid": "1710497702.42",
    "userfield": "",
    "peeraccount": "",
    "linkedid": "1710497702.42",
    "sequence": "7",
}


def fields(width: int = 21, **values: str) -> list[str]:
    data = {**DEFAULTS, **values}
    return [data[name] for name in LAYOUTS[width]]


def write(path: Path, *rows: list[str], mode: str = "w") -> None:
    """Rows as cdr_csv writes them: every field quoted, quotes doubled, one line each."""
    with open(path, mode, newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)


def line(row: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(row)
    return out.getvalue().encode()


def query(
    uniqueid: str | None = None,
    at: tuple[int, int, int] = (10, 15, 2),
    src: str | None = None,
    dst: str | None = None,
    day: int = 15,
) -> CdrQuery:
    return CdrQuery(
        recordingfiles=("out-5551234-201-20240315-101502-1710497702.42.wav",),
        uniqueid=uniqueid,
        started_at=datetime(2024, 3, day, *at).astimezone(),  # local_start: this wall time
        src=src,
        dst=dst,
    )


def linked(cdr: CsvCdr, uniqueid: str) -> str | None:
    """The linkedid of the row that answered a lookup by `uniqueid` (None: none did)."""
    info = cdr.lookup(query(uniqueid=uniqueid))
    return None if info is None else info.linkedid


@pytest.fixture
def master(tmp_path: Path) -> Path:
    return tmp_path / "Master.csv"


@pytest.fixture
def source(master: Path) -> Iterator[Callable[..., CsvCdr]]:
    made: list[CsvCdr] = []

    def build(**kwargs: Any) -> CsvCdr:
        made.append(CsvCdr(**{"path": master, **kwargs}))
        return made[-1]

    yield build
    for cdr in made:
        cdr.close()


# --- layouts


@pytest.mark.parametrize("width", [16, 18, 21])
def test_each_layout_is_read_by_its_field_count(
    master: Path, source: Callable[..., CsvCdr], width: int
) -> None:
    write(master, fields(width))
    cdr = source()
    # a 16-column row has no uniqueid: the query's uniqueid cannot match, time and number do
    info = cdr.lookup(query(uniqueid="1710497702.42", src="201", dst="5551234"))
    assert info is not None
    assert (info.caller_number, info.caller_name) == ("201", "Alice")
    assert (info.dst, info.duration, info.billsec) == ("5551234", 30, 25)
    assert info.disposition == "ANSWERED"
    assert info.linkedid == ("1710497702.42" if width == 21 else None)
    description = cdr.check()
    assert description.startswith(f"csv {master} ({width} columns, ")
    assert ("with uniqueid" in description) == (width > 16)


def test_check_descriptions_and_advice(master: Path, source: Callable[..., CsvCdr]) -> None:
    master.write_bytes(b"")
    assert source().check() == f"csv {master} (no rows yet)"
    write(master, fields(18))
    assert source().check() == f"csv {master} (18 columns, with uniqueid; 1 indexed)"
    assert "newcdrcolumns=yes" in source().advice()[0]
    write(master, fields(21))
    assert source().check() == f"csv {master} (21 columns, with uniqueid and linkedid; 1 indexed)"
    assert source().advice() == []
    write(master, fields(16))
    assert "matched by time and number" in source().check()
    assert "loguniqueid=yes" in source().advice()[0]


def test_rows_of_mixed_layouts_in_one_file(master: Path, source: Callable[..., CsvCdr]) -> None:
    """loguniqueid switched on one day: the old rows stay 16 columns wide."""
    write(
        master,
        fields(16, start="2024-03-15 09:00:00", dst="100", clid='"Old" <201>'),
        fields(21, uniqueid="9.1", linkedid="9.1"),
    )
    cdr = source()
    old = cdr.lookup(query(at=(9, 0, 0), dst="100"))
    assert old is not None and (old.caller_name, old.linkedid) == ("Old", None)
    assert linked(cdr, "9.1") == "9.1"
    assert cdr.skipped == 0


def test_explicit_columns(master: Path, source: Callable[..., CsvCdr]) -> None:
    columns = ["start", "clid", "src", "dst", "uniqueid", "whatever", "billsec", "did"]
    write(
        master,
        ["2024-03-15 10:15:02", '"Carol" <301>', "301", "600", "5.5", "x", "12", "2125550100"],
        ["too", "few"],
    )
    cdr = source(columns=columns)
    info = cdr.lookup(query(uniqueid="5.5"))
    assert info is not None
    assert (info.caller_name, info.caller_number, info.dst) == ("Carol", "301", "600")
    assert (info.billsec, info.duration, info.did) == (12, None, "2125550100")
    assert cdr.skipped == 1
    with pytest.raises(ConfigError, match=r"cdr\.columns names 8 columns .* has 2 fields"):
        cdr.check()
    write(master, ["2024-03-15 10:15:02", '"Carol" <301>', "301", "600", "5.5", "x", "12", ""])
    assert (
        source(columns=columns).check()
        == f"csv {master} (cdr.columns: 8 columns, with uniqueid; 1 indexed)"
    )


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["src", "dst"], "start"),
        (["start", "dst", "uniqueid"], "src` or `clid"),
        (["start", "calldate", "src"], "calldate named more than once"),
    ],
)
def test_bad_columns_are_a_config_error(master: Path, columns: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"cdr\.columns: .*{message}"):
        CsvCdr(path=master, columns=columns)


def test_unknown_layout_needs_columns(master: Path, source: Callable[..., CsvCdr]) -> None:
    write(master, [*fields(16), "1710497702.42"])  # loguniqueid=yes but loguserfield=no
    cdr = source()
    assert cdr.lookup(query(uniqueid="1710497702.42", src="201")) is None
    assert cdr.skipped == 1
    with pytest.raises(ConfigError, match=r"17 fields.*cdr\.columns"):
        cdr.check()
    named = source(columns=[*LAYOUTS[16], "uniqueid"])
    info = named.lookup(query(uniqueid="1710497702.42"))
    assert info is not None and (info.caller_name, info.dst) == ("Alice", "5551234")


# --- matching


def test_queue_call_joined_through_linkedid(master: Path, source: Callable[..., CsvCdr]) -> None:
    caller = fields(
        uniqueid="100.1", linkedid="100.1", clid='"Alice" <2125550100>', src="2125550100",
        dst="600", start="2024-03-15 10:15:00", duration="40", sequence="1",
    )  # fmt: skip
    agent = fields(
        uniqueid="100.2", linkedid="100.1", clid='"Sales" <600>', src="600",
        dst="301", start="2024-03-15 10:15:04", duration="33", sequence="2",
    )  # fmt: skip
    other = fields(uniqueid="200.1", linkedid="200.1", clid='"Mallory" <666>', src="666")
    write(master, other, agent, caller)
    cdr = source()

    info = cdr.lookup(query(uniqueid="100.2"))  # the agent leg's recording
    assert info is not None
    assert (info.caller_name, info.caller_number) == ("Alice", "2125550100")  # earliest row
    assert (info.dst, info.duration, info.linkedid) == ("301", 33, "100.1")  # its own row

    info = cdr.lookup(query(uniqueid="100.1"))  # the caller's: own row first
    assert info is not None
    assert (info.caller_name, info.dst, info.duration) == ("Alice", "600", 40)

    assert cdr.lookup(query(uniqueid="300.1", src="201")) is None  # uniqueids never by time


def test_time_window_and_numbers_without_uniqueid(
    master: Path, source: Callable[..., CsvCdr]
) -> None:
    write(
        master,
        fields(16, start="2024-03-15 10:15:02", duration="30"),
        fields(16, start="2024-03-15 10:15:06", duration="60", src="", clid='"Bob" <202>'),
    )
    cdr = source()

    def duration(at: tuple[int, int, int], src: str | None, dst: str | None) -> int | None:
        info = cdr.lookup(query(at=at, src=src, dst=dst))
        return None if info is None else info.duration

    assert duration((10, 15, 2), "201", "5551234") == 30
    assert duration((10, 15, 0), "201", "5551234") == 30  # -2 s
    assert duration((10, 15, 4), "201", None) == 30  # +2 s
    assert duration((10, 14, 59), "201", "5551234") is None  # -3 s
    assert duration((10, 15, 5), "201", "5551234") is None  # +3 s
    assert duration((10, 15, 2), "209", "5551234") is None  # wrong caller
    assert duration((10, 15, 2), "201", "5559999") is None  # wrong destination
    assert duration((10, 15, 6), "202", "5551234") == 60  # the number from clid
    assert duration((10, 15, 4), None, "5551234") == 30  # both 2 s away: the earlier
    assert duration((10, 15, 5), None, None) == 60  # the closer


# --- reading the file


@pytest.fixture
def read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """read[0]: the bytes CsvCdr has read from its files."""
    count = [0]

    class Counting(io.FileIO):
        def readinto(self, buffer: Any) -> int | None:
            n = super().readinto(buffer)
            count[0] += n or 0
            return n

    monkeypatch.setattr(
        csvfile, "open", lambda path, mode: io.BufferedReader(Counting(path), 256), raising=False
    )
    return count


def test_appended_rows_are_read_without_rereading(
    master: Path, source: Callable[..., CsvCdr], read: list[int]
) -> None:
    write(master, *(fields(uniqueid=f"1.{i}", linkedid=f"1.{i}") for i in range(2000)))
    size = master.stat().st_size
    cdr = source()
    assert linked(cdr, "1.1999") == "1.1999"
    assert cdr.offset == size and read[0] == size

    write(master, fields(uniqueid="2.0", linkedid="2.0"), mode="a")
    read[0] = 0
    assert linked(cdr, "2.0") == "2.0"
    assert cdr.offset == master.stat().st_size > size
    assert read[0] < 16 << 10  # the new row (and a look at the old tail), not the file
    read[0] = 0
    assert linked(cdr, "1.0") == "1.0"  # still indexed
    assert read[0] < 16 << 10


def test_a_call_of_any_age_is_found_with_memory_that_does_not_grow(
    master: Path, source: Callable[..., CsvCdr], tmp_path: Path
) -> None:
    """A backfill of last year's calls finds their rows: every row is in the index file,
    none is held in memory (the reader keeps one chunk of the file at a time)."""
    first = datetime(2023, 3, 1)
    rows = []
    for i in range(1200):  # one call every 8 hours for 400 days, some names on 2 lines
        start = (first + i * timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")
        clid = f'"Line\n{i}" <201>' if i % 3 else f'"Caller {i}" <201>'
        rows.append(fields(uniqueid=f"1.{i}", linkedid=f"1.{i}", start=start, clid=clid))
    write(master, *rows)
    cdr = source(index=tmp_path / "index.db")
    assert linked(cdr, "1.1199") == "1.1199"  # the newest: reads the file
    assert cdr.offset == master.stat().st_size and cdr.skipped == 0
    oldest = cdr.lookup(query(uniqueid="1.0"))  # 400 days older than the newest
    assert oldest is not None and oldest.caller_name == "Caller 0"
    month_ago = cdr.lookup(query(uniqueid="1.1111"))
    assert month_ago is not None and month_ago.caller_name == "Line\n1111"
    assert cdr.indexed() == 1200
    assert vars(cdr)["_batch"] == []  # nothing of the file stays in memory
    cdr.close()
    assert (tmp_path / "index.db").stat().st_size > 0


def test_indexing_a_big_file_holds_a_chunk_not_the_file(
    master: Path, source: Callable[..., CsvCdr], tmp_path: Path
) -> None:
    rows = (fields(uniqueid=f"1.{i}", linkedid=f"1.{i}", cnam="x" * 80) for i in range(60_000))
    write(master, *rows)
    size = master.stat().st_size
    cdr = source(index=tmp_path / "index.db")
    tracemalloc.start()
    try:
        assert linked(cdr, "1.59999") == "1.59999"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size > 12 << 20
    assert peak < size / 3, f"{peak} bytes at the peak for a {size}-byte file"
    assert cdr.indexed() == 60_000


def test_a_restart_reads_only_what_was_appended_meanwhile(
    master: Path, source: Callable[..., CsvCdr], read: list[int], tmp_path: Path
) -> None:
    write(master, *(fields(uniqueid=f"1.{i}", linkedid=f"1.{i}") for i in range(2000)))
    size = master.stat().st_size
    first = source(index=tmp_path / "index.db")
    assert linked(first, "1.5") == "1.5"
    first.close()
    write(master, fields(uniqueid="2.0", linkedid="2.0", cnam="Late"), mode="a")
    read[0] = 0
    again = source(index=tmp_path / "index.db")  # the agent restarted
    info = again.lookup(query(uniqueid="2.0"))
    assert info is not None and info.linkedid == "2.0"
    assert read[0] < 16 << 10  # the new row (and a look at the old tail), not the file
    assert again.offset == master.stat().st_size > size
    assert again.indexed() == 2001


def test_a_rotated_file_stays_indexed_across_a_restart(
    master: Path, source: Callable[..., CsvCdr], tmp_path: Path
) -> None:
    write(master, fields(uniqueid="1.1", linkedid="1.1", start="2024-01-02 10:00:00"))
    source(index=tmp_path / "index.db").lookup(query(uniqueid="1.1"))
    os.rename(master, master.with_suffix(".csv.1"))
    write(master, fields(uniqueid="2.1", linkedid="2.1"))
    later = source(index=tmp_path / "index.db")
    assert linked(later, "2.1") == "2.1"
    old = later.lookup(query(uniqueid="1.1"))
    assert old is not None and old.linkedid == "1.1"
    assert later.indexed() == 2


def test_partial_last_line_waits_for_its_end(master: Path, source: Callable[..., CsvCdr]) -> None:
    first = line(fields(uniqueid="1.1", linkedid="1.1"))
    second = line(fields(uniqueid="1.2", linkedid="1.2", clid='"Two\nLines" <202>'))
    cut = second.index(b"\n") + 1  # inside the quoted clid, just after its newline
    master.write_bytes(first + second[:cut])
    cdr = source()
    assert cdr.lookup(query(uniqueid="1.2")) is None
    assert cdr.offset == len(first)
    with open(master, "ab") as f:
        f.write(second[cut:-3])
    assert cdr.lookup(query(uniqueid="1.2")) is None
    with open(master, "ab") as f:
        f.write(second[-3:])
    info = cdr.lookup(query(uniqueid="1.2"))
    assert info is not None and info.caller_name == "Two\nLines"
    assert cdr.offset == len(first + second)


def test_records_split_across_read_chunks(
    master: Path, source: Callable[..., CsvCdr], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvfile, "CHUNK", 7)
    names = [f'"N{i}\n""q""" <20{i}>' for i in range(5)]
    write(
        master, *(fields(uniqueid=f"1.{i}", linkedid=f"1.{i}", clid=n) for i, n in enumerate(names))
    )
    cdr = source()
    for i in range(5):
        info = cdr.lookup(query(uniqueid=f"1.{i}"))
        assert info is not None and info.caller_number == "201"
    assert cdr.skipped == 0


def test_a_record_cut_short_is_dropped(master: Path, source: Callable[..., CsvCdr]) -> None:
    """A line with an unbalanced quote (a crash mid-write) must not swallow the file."""
    master.write_bytes(b'"","201","555","from-internal","\\"Cut\n')
    write(master, *(fields(uniqueid=f"1.{i}", linkedid=f"1.{i}") for i in range(80)), mode="a")
    cdr = source()
    assert linked(cdr, "1.0") == "1.0"
    assert linked(cdr, "1.79") == "1.79"
    assert cdr.skipped == 1


def test_rotation_is_followed(master: Path, source: Callable[..., CsvCdr]) -> None:
    write(master, fields(uniqueid="1.1", linkedid="1.1"))
    cdr = source()
    assert linked(cdr, "1.1") == "1.1"
    write(master, fields(uniqueid="1.2", linkedid="1.2"), mode="a")  # just before the rename
    os.rename(master, master.with_suffix(".csv.1"))
    write(master, fields(uniqueid="2.1", linkedid="2.1"))
    assert linked(cdr, "2.1") == "2.1"
    assert linked(cdr, "1.2") == "1.2"  # the old file was read to its end
    assert linked(cdr, "1.1") == "1.1"  # still indexed
    assert cdr.offset == master.stat().st_size


@pytest.mark.parametrize("rows_after", [1, 5])
def test_truncation_starts_again(
    master: Path, source: Callable[..., CsvCdr], rows_after: int
) -> None:
    """Shorter than before (size < offset), or already longer again (rewritten)."""
    write(master, *(fields(uniqueid=f"1.{i}", linkedid=f"1.{i}") for i in range(3)))
    cdr = source()
    assert linked(cdr, "1.0") == "1.0"
    with open(master, "r+b") as f:  # copytruncate keeps the inode
        f.truncate(0)
    write(master, *(fields(uniqueid=f"2.{i}", linkedid=f"2.{i}") for i in range(rows_after)))
    assert linked(cdr, "2.0") == "2.0"
    assert cdr.offset == master.stat().st_size


def test_missing_file(master: Path, source: Callable[..., CsvCdr]) -> None:
    cdr = source()
    with pytest.raises(TransientError, match="No such file"):
        cdr.lookup(query(uniqueid="1.1"))
    with pytest.raises(ConfigError, match=r"cdr\.path: .*cdr_csv"):
        cdr.check()
    write(master, fields(uniqueid="1.1", linkedid="1.1"))
    assert linked(cdr, "1.1") == "1.1"
    master.unlink()  # removed, not yet recreated
    with pytest.raises(TransientError):
        cdr.lookup(query(uniqueid="1.1"))


def test_unreadable_file(
    master: Path, source: Callable[..., CsvCdr], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(master, fields())

    def denied(path: Path, mode: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(csvfile, "open", denied, raising=False)  # the tests may run as root
    cdr = source()
    with pytest.raises(TransientError, match="Permission denied"):
        cdr.lookup(query(uniqueid="1.1"))
    with pytest.raises(ConfigError, match="read access"):
        cdr.check()


def test_hostile_text_comes_through_verbatim(master: Path, source: Callable[..., CsvCdr]) -> None:
    name = (
        '<script>alert(\\"x\\")</script> ../../etc/passwd, \x1b[2J\x07\t\r\n'
        + "\u00e9\u202e" * 5
        + "A" * 2048
    )
    clid = f'"{name}" <2125550100>'
    assert split_clid(clid) == (name, "2125550100")
    src = '../<b>"1"</b>,'
    write(master, fields(uniqueid="1.1", linkedid="1.1", clid=clid, src=src, dst="x\x00y" * 700))
    cdr = source()
    info = cdr.lookup(query(uniqueid="1.1"))
    assert info is not None
    assert (info.caller_name, info.caller_number, info.dst) == (name, src, "x\x00y" * 700)
    info = cdr.lookup(query(src=src))  # by time and number too
    assert info is not None and info.caller_name == name


def test_rows_of_any_age_and_order_are_kept(master: Path, source: Callable[..., CsvCdr]) -> None:
    write(
        master,
        fields(uniqueid="1.1", linkedid="1.1", start="2024-03-10 10:15:02"),
        fields(uniqueid="1.2", linkedid="1.2", start="2024-03-13 10:15:02"),
    )
    cdr = source()
    write(master, fields(uniqueid="1.3", linkedid="1.3", start="2024-03-16 10:15:02"), mode="a")
    # an old row written late (a batch flushed after a restart)
    write(master, fields(uniqueid="1.0", linkedid="1.0", start="2021-03-01 10:15:02"), mode="a")
    for uid in ("1.0", "1.1", "1.2", "1.3"):
        info = cdr.lookup(query(uniqueid=uid))
        assert info is not None and info.linkedid == uid
    by_time = cdr.lookup(query(at=(10, 15, 2), day=13, src="201"))  # a name without uid
    assert by_time is not None and by_time.linkedid == "1.2"
    assert cdr.indexed() == 4


def test_a_record_read_twice_is_indexed_once(master: Path, source: Callable[..., CsvCdr]) -> None:
    write(master, fields(uniqueid="1.1", linkedid="1.1"))
    cdr = source()
    cdr.lookup(query(uniqueid="1.1"))
    with open(master, "r+b") as f:  # rewritten in place with the same first row
        f.truncate(0)
    write(master, fields(uniqueid="1.1", linkedid="1.1"), fields(uniqueid="1.2", linkedid="1.2"))
    assert linked(cdr, "1.2") == "1.2"
    assert cdr.indexed() == 2


def test_a_start_in_the_future_does_not_age_out_the_rest(
    master: Path, source: Callable[..., CsvCdr]
) -> None:
    """A PBX whose clock once said 2038 must not make every later row look old."""
    write(master, fields(uniqueid="9.9", linkedid="9.9", start="2038-01-01 00:00:00"))
    write(master, fields(uniqueid="1.1", linkedid="1.1"), mode="a")
    cdr = source()
    info = cdr.lookup(query(uniqueid="1.1"))
    assert info is not None and info.linkedid == "1.1"
    future = cdr.lookup(query(uniqueid="9.9"))
    assert future is not None and future.linkedid == "9.9"
