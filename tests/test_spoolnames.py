"""The file name parser: tables of real names, refusals, custom patterns, round-trips."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agent.errors import UnparseableName
from agent.spoolnames import (
    DEFAULT_EXTENSIONS,
    CustomPattern,
    compile_custom_pattern,
    is_leg_file,
    parse,
)

ZURICH = ZoneInfo("Europe/Zurich")
MODERN_TYPES = (
    *("out", "in", "internal", "external", "q", "rg"),
    *("generic", "parked", "ondemand", "exten", "force", "conf"),
)
EXTENSION_KINDS = {"out", "internal", "exten", "force", "ondemand"}


def case(
    name: str,
    kind: str,
    dst: str | None,
    src: str | None,
    started_at: str,
    uniqueid: str | None,
    extension: str | None,
    era: str,
    pattern: str,
    *,
    head: str | None = None,
) -> Any:
    """One row: a name and every field parse() must give for it (tz = Europe/Zurich)."""
    expected = {
        "kind": kind,
        "dst": dst,
        "src": src,
        "started_at": started_at,
        "uniqueid": uniqueid,
        "extension": extension,
        "era": era,
        "pattern": pattern,
        "format": name.rsplit(".", 1)[1],
        "head": head,
    }
    return pytest.param(name, expected, id=name)


T = "2024-03-15T10:15:02+01:00"  # what "20240315-101502" means in Zurich
T08 = "2008-06-19T14:35:12+02:00"  # "20080619-143512", summer time
UID = "1710497702.42"

NAMES = [
    # freepbx-facts.md section 1, every example
    case(f"out-18005551234-1001-20240315-101502-{UID}.wav",
         "out", "18005551234", "1001", T, UID, "1001", "modern", "modern"),
    case("in-17778611565101-13164619284-20260309-113203-1773081123.265.wav",
         "in", "17778611565101", "13164619284", "2026-03-09T11:32:03+01:00",
         "1773081123.265", None, "modern", "modern"),
    case(f"800-800-always-20240315-101502-{UID}.wav",
         "conf", "800", None, T, UID, None, "conference", "conference"),
    case(f"800-800-always-20240315-101502-{UID}-1710497702.wav",
         "conf", "800", None, T, UID, None, "conference", "conference-ast13"),
    case("exten-1002-1001-20131127-101502-1385565302.12.wav",
         "exten", "1002", "1001", "2013-11-27T10:15:02+01:00", "1385565302.12", "1001",
         "modern", "modern"),
    case("OUT201-20080619-143512-1213900512.123.wav",
         "legacy-out", None, "201", T08, "1213900512.123", "201", "legacy", "legacy-out"),
    case("20080619-143512-1213900512.123.wav",
         "legacy-in", None, None, T08, "1213900512.123", None, "legacy", "legacy-in"),
    case("q600-20080619-143512-1213900512.123.wav",
         "legacy-queue", "600", None, T08, "1213900512.123", None, "legacy", "legacy-queue"),
    case("g601-20080619-143512-1213900512.123.wav",
         "legacy-group", "601", None, T08, "1213900512.123", None, "legacy", "legacy-group"),
    case("OUT-000-4178575309-20080619-143512-1213900512.123.wav",
         "disa", "4178575309", "000", T08, "1213900512.123", "000", "legacy", "disa"),
    case("auto-1389974400-1389974390.55.wav",
         "auto", None, None, "2014-01-17T17:00:00+01:00", "1389974390.55", None, "auto", "auto"),
    case("auto-1389974400-1001-1002.wav",
         "auto", "1002", "1001", "2014-01-17T17:00:00+01:00", None, None, "auto", "auto-cid"),
    # every modern type; only a calling-extension kind with an all-digit src has `extension`
    *(
        case(f"{kind}-600-1001-20240315-101502-{UID}.wav", kind, "600", "1001", T, UID,
             "1001" if kind in EXTENSION_KINDS else None, "modern", "modern")
        for kind in MODERN_TYPES
    ),
    # DID "s", caller "unknown" or "+...": kept as text; not an extension
    case(f"in-s-+41791234567-20240315-101502-{UID}.wav",
         "in", "s", "+41791234567", T, UID, None, "modern", "modern"),
    case(f"out-18005551234-unknown-20240315-101502-{UID}.wav",
         "out", "18005551234", "unknown", T, UID, None, "modern", "modern"),
    case(f"out-18005551234-+41791234567-20240315-101502-{UID}.wav",
         "out", "18005551234", "+41791234567", T, UID, None, "modern", "modern"),
    # systemname in the uniqueid, with dashes of its own
    case("out-1800-1001-20240315-101502-pbx-east-1710497702.42.wav",
         "out", "1800", "1001", T, "pbx-east-1710497702.42", "1001", "modern", "modern"),
    case("800-800-always-20240315-101502-pbx-east-1710497702.42-1710497702.wav",
         "conf", "800", None, T, "pbx-east-1710497702.42", None, "conference",
         "conference-ast13"),
    # an originate-supplied uniqueid
    case("out-1800-1001-20240315-101502-callback_42.wav",
         "out", "1800", "1001", T, "callback_42", "1001", "modern", "modern"),
    # dashes inside dst/src: ambiguous, the raw head is kept for the CDR to decide
    case(f"out-1-800-555-1234-1001-20240315-101502-{UID}.wav",
         "out", None, None, T, UID, None, "modern", "modern", head="1-800-555-1234-1001"),
    # dst and src that look like a date and a time: the LAST anchor wins
    case(f"out-20240101-120000-20240315-101502-{UID}.wav",
         "out", "20240101", "120000", T, UID, "120000", "modern", "modern"),
    # other formats, as on disk
    case(f"out-1800-1001-20240315-101502-{UID}.WAV",
         "out", "1800", "1001", T, UID, "1001", "modern", "modern"),
    case(f"in-1800-555-20240315-101502-{UID}.gsm",
         "in", "1800", "555", T, UID, None, "modern", "modern"),
    case(f"q-600-555-20240315-101502-{UID}.mp3",
         "q", "600", "555", T, UID, None, "modern", "modern"),
    case(f"internal-1002-1001-20240715-101502-{UID}.ulaw",
         "internal", "1002", "1001", "2024-07-15T10:15:02+02:00", UID, "1001",
         "modern", "modern"),
    # one-touch with channel names as caller IDs (dashes): ambiguous
    case("auto-1389974400-SIP-1001-00000001-SIP-1002-00000002.wav",
         "auto", None, None, "2014-01-17T17:00:00+01:00", None, None, "auto", "auto-cid",
         head="SIP-1001-00000001-SIP-1002-00000002"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "expected"), NAMES)
def test_parse_known_names(name: str, expected: dict[str, Any]) -> None:
    assert parse(name, tz=ZURICH).to_json() == expected


REFUSALS = [
    (f"out-1800-1001-20240315-101502-{UID}.txt", "unsupported extension '.txt'"),
    (f"out-1800-1001-20240315-101502-{UID}.Wav", "unsupported extension '.Wav'"),
    ("out-1800-1001-20240315-101502-1710497702", "no file extension"),
    ("out-1800-1001-20240315-101502-1710497702.", "no file extension"),
    ("", "no file extension"),
    (f"out-1800-1001-20240315-101502-{UID}-in.wav", "Monitor leg file"),
    ("call42-out.WAV", "Monitor leg file"),
    (f"out-1800-1001-20241332-101502-{UID}.wav", "impossible date"),
    (f"out-1800-1001-20240315-256100-{UID}.wav", "impossible date"),
    (f"00000101-101502-{UID}.wav", "impossible date"),
    ("auto-99999999999999999999-1.2.wav", "impossible date"),
    ("out-1-2-20240315-101502.wav", "no uniqueid"),
    ("out-1-2-20240315-101502-.wav", "no uniqueid"),
    ("hello.wav", "does not match any known FreePBX recording name"),
    (f"-20240315-101502-{UID}.wav", "does not match"),
    (f"out-1001-20240315-101502-{UID}.wav", "does not match"),  # no dst-src pair
    (f"OUT-abc-123-20240315-101502-{UID}.wav", "does not match"),
    (f"800-801-always-20240315-101502-{UID}.wav", "does not match"),  # rooms differ
    ("out-1-2-20240315-101502-a b.wav", "does not match"),  # whitespace in the uniqueid
    ("out-1-2-20240315-1015022-1.2.wav", "does not match"),
    ("a/out-1-2-20240315-101502-1.2.wav", "'/' or NUL"),
    ("out-1-2-20240315-101502-1.2\0.wav", "'/' or NUL"),
]


@pytest.mark.parametrize(("name", "reason"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(name: str, reason: str) -> None:
    with pytest.raises(UnparseableName, match=re.escape(reason)) as info:
        parse(name, tz=ZURICH)
    assert "\n" not in str(info.value)


def test_extensions_are_configurable_and_case_sensitive() -> None:
    name = f"out-1800-1001-20240315-101502-{UID}.wav49"
    assert parse(name, extensions=("wav49",), tz=ZURICH).format == "wav49"
    with pytest.raises(UnparseableName, match="unsupported extension"):
        parse(name.replace(".wav49", ".WAV"), extensions=("wav",), tz=ZURICH)


def test_default_extensions() -> None:
    assert set(DEFAULT_EXTENSIONS) == {"wav", "WAV", "gsm", "ulaw", "alaw", "sln", "g729", "mp3"}


def test_no_tz_means_this_machines_zone() -> None:
    started = parse(f"out-1800-1001-20240315-101502-{UID}.wav").started_at
    assert started.tzinfo is not None
    assert started.replace(tzinfo=None) == datetime(2024, 3, 15, 10, 15, 2)


@pytest.mark.parametrize(
    ("name", "leg"),
    [
        ("call42-in.wav", True),
        ("call42-out.wav", True),
        ("call42-in.WAV", True),
        ("call42-out.Gsm", True),
        (f"out-1800-1001-20240315-101502-{UID}-in.wav", True),
        (f"out-1800-1001-20240315-101502-{UID}.wav", False),
        (f"in-1800-1001-20240315-101502-{UID}.wav", False),
        ("in.wav", False),
        ("call42-inside.wav", False),
        ("call42-in", False),
        ("call42-in.wav.bak", False),
    ],
)
def test_is_leg_file(name: str, leg: bool) -> None:
    assert is_leg_file(name) is leg


# --- custom patterns --------------------------------------------------------------------

DATED = r"rec_(?P<date>\d{8})_(?P<time>\d{6})_(?P<src>\d+)_(?P<dst>\d*)_(?P<uniqueid>[\d.]+)"


def test_custom_pattern_with_date_and_time() -> None:
    custom = compile_custom_pattern("pbx-b", DATED)
    got = parse(f"rec_20240315_101502_1001__{UID}.gsm", patterns=[custom], tz=ZURICH)
    assert got.to_json() == {
        "kind": "custom",
        "dst": None,  # an empty group counts as absent
        "src": "1001",
        "started_at": T,
        "uniqueid": UID,
        "extension": None,
        "era": "custom",
        "pattern": "pbx-b",
        "format": "gsm",
        "head": None,
    }


def test_custom_pattern_with_epoch() -> None:
    custom = compile_custom_pattern("fax", r"fax-(?P<epoch>\d+)-(?P<extension>\d+)")
    got = parse("fax-1389974400-1001.wav", patterns=[custom], tz=ZURICH)
    assert got.started_at.isoformat() == "2014-01-17T17:00:00+01:00"
    assert (got.extension, got.uniqueid, got.dst, got.src) == ("1001", None, None, None)
    assert (got.kind, got.era, got.pattern) == ("custom", "custom", "fax")


def test_custom_patterns_come_first_in_order() -> None:
    first = compile_custom_pattern(
        "first", r"out-(?P<dst>\d+)-.*-(?P<date>\d{8})-(?P<time>\d{6})-.*"
    )
    second = compile_custom_pattern("second", r"(?P<date>\d{8})(?P<time>\d{6}).*")
    name = f"out-1800-1001-20240315-101502-{UID}.wav"
    assert parse(name, patterns=[first, second], tz=ZURICH).pattern == "first"
    assert parse(name, patterns=[second], tz=ZURICH).pattern == "modern"  # no match: built-ins


def test_custom_pattern_refusals() -> None:
    custom = compile_custom_pattern(
        "either", r"x-(?:(?P<date>\d{8})-(?P<time>\d{6})|(?P<epoch>\d+)|none)"
    )
    with pytest.raises(UnparseableName, match="impossible date"):
        parse("x-20241332-101502.wav", patterns=[custom])
    with pytest.raises(UnparseableName, match="captured no date"):
        parse("x-none.wav", patterns=[custom])
    with pytest.raises(UnparseableName, match="Monitor leg file"):
        parse("x-1-in.wav", patterns=[compile_custom_pattern("legs", r"(?P<epoch>.*)")])


@pytest.mark.parametrize(
    ("regex", "message"),
    [
        (r"rec_(?P<date>\d{8}", "invalid regular expression"),
        (r"(?P<date>\d{8})(?P<time>\d{6})(?P<caller>\d+)", "unknown named group caller"),
        (r"(?P<src>\d+)", "needs both (?P<date>...) and (?P<time>...)"),
        (r"(?P<date>\d{8})", "needs both"),
    ],
)
def test_compile_custom_pattern_errors(regex: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        compile_custom_pattern("mine", regex)
    assert "'mine'" in str(info.value)


def test_compile_custom_pattern_returns_compiled_regex() -> None:
    custom = compile_custom_pattern("pbx-b", DATED)
    assert custom == CustomPattern(name="pbx-b", regex=re.compile(DATED))


# --- round-trips ------------------------------------------------------------------------

# dst/src as FreePBX writes them: anything but a dash (it would be ambiguous), "/" or NUL.
fields = st.text(st.characters(exclude_characters="-/\0", exclude_categories=["Cs"]), min_size=1)
numbers = st.from_regex(r"[0-9]{1,12}", fullmatch=True)
moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda moment: moment.replace(microsecond=0, fold=0)  # a name has no fold: the first wins
)
epoch_uids = st.builds("{}.{}".format, st.integers(10**8, 4 * 10**9), st.integers(0, 10**6))
systemnames = st.from_regex(r"[a-z][a-z0-9]{0,7}(-[a-z][a-z0-9]{0,7}){0,2}", fullmatch=True)
uniqueids = st.one_of(
    epoch_uids,
    st.builds("{}-{}".format, systemnames, epoch_uids),
    st.from_regex(r"[A-Za-z0-9_.]{1,20}", fullmatch=True),  # what an originate supplied
)
extensions = st.sampled_from(DEFAULT_EXTENSIONS)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d-%H%M%S")


@given(st.sampled_from(MODERN_TYPES), fields, fields, moments, uniqueids, extensions)
def test_modern_round_trip(
    kind: str, dst: str, src: str, moment: datetime, uid: str, ext: str
) -> None:
    name = f"{kind}-{dst}-{src}-{stamp(moment)}-{uid}.{ext}"
    assume(not is_leg_file(name))
    got = parse(name, tz=ZURICH)
    is_extension = kind in EXTENSION_KINDS and src.isascii() and src.isdigit()
    assert (got.kind, got.dst, got.src, got.uniqueid) == (kind, dst, src, uid)
    assert got.extension == (src if is_extension else None)
    assert got.started_at.isoformat() == moment.replace(tzinfo=ZURICH).isoformat()
    assert (got.era, got.pattern, got.format, got.head) == ("modern", "modern", ext, None)


@given(numbers, st.from_regex(r"[0-9+*#]{1,15}", fullmatch=True), moments, uniqueids, extensions)
def test_disa_round_trip(ext: str, number: str, moment: datetime, uid: str, fmt: str) -> None:
    name = f"OUT-{ext}-{number}-{stamp(moment)}-{uid}.{fmt}"
    assume(not is_leg_file(name))
    got = parse(name, tz=ZURICH)
    assert (got.kind, got.src, got.dst, got.extension) == ("disa", ext, number, ext)
    assert (got.uniqueid, got.era, got.format) == (uid, "legacy", fmt)
    assert got.started_at.isoformat() == moment.replace(tzinfo=ZURICH).isoformat()


LEGACY = {
    "legacy-out": ("OUT{}-", "src"),
    "legacy-group": ("g{}-", "dst"),
    "legacy-queue": ("q{}-", "dst"),
    "legacy-in": ("", None),
}


@given(st.sampled_from(sorted(LEGACY)), numbers, moments, uniqueids, extensions)
def test_legacy_round_trip(kind: str, number: str, moment: datetime, uid: str, fmt: str) -> None:
    prefix, field = LEGACY[kind]
    name = f"{prefix.format(number)}{stamp(moment)}-{uid}.{fmt}"
    assume(not is_leg_file(name))
    got = parse(name, tz=ZURICH)
    assert (got.kind, got.pattern, got.era, got.uniqueid, got.format) == (
        kind, kind, "legacy", uid, fmt,
    )  # fmt: skip
    assert got.src == (number if field == "src" else None)
    assert got.dst == (number if field == "dst" else None)
    assert got.extension == (number if kind == "legacy-out" else None)
    assert got.started_at.isoformat() == moment.replace(tzinfo=ZURICH).isoformat()


@given(
    st.integers(0, 4 * 10**9),
    st.one_of(epoch_uids, st.builds("{}-{}".format, systemnames, epoch_uids)),
    extensions,
)
def test_auto_round_trip(epoch: int, uid: str, fmt: str) -> None:
    got = parse(f"auto-{epoch}-{uid}.{fmt}", tz=ZURICH)
    assert (got.kind, got.pattern, got.era, got.format) == ("auto", "auto", "auto", fmt)
    assert (got.uniqueid, got.src, got.dst, got.extension) == (uid, None, None, None)
    assert got.started_at == datetime.fromtimestamp(epoch, UTC)
    assert got.started_at.tzinfo is ZURICH  # shown in the PBX's zone, not UTC


@given(st.integers(0, 4 * 10**9), numbers, st.from_regex(r"\+?[0-9]{1,12}|unknown", fullmatch=True))
def test_auto_cid_round_trip(epoch: int, cid: str, peercid: str) -> None:
    got = parse(f"auto-{epoch}-{cid}-{peercid}.wav", tz=ZURICH)
    assert (got.kind, got.pattern, got.src, got.dst, got.uniqueid) == (
        "auto", "auto-cid", cid, peercid, None,
    )  # fmt: skip


# Arbitrary text, and text made of the pieces real names are made of: a refusal is always
# UnparseableName with a one-line reason, never another exception.
@given(st.one_of(st.text(), st.text(st.sampled_from("0123456789-.autoOUTgqinwavWAV s/\0"))))
def test_parse_raises_nothing_but_unparseable_name(name: str) -> None:
    for candidate in (name, name + ".wav"):
        try:
            got = parse(candidate, tz=ZURICH)
        except UnparseableName as exc:
            assert str(exc)
            assert "\n" not in str(exc)
        else:
            assert got.started_at.tzinfo is not None
