"""Naming the shipped copy: real FreePBX calls, hostile caller IDs, template errors, properties."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.shipnames import (
    DEFAULT_TEMPLATE,
    MANIFEST_FIELDS,
    PLACEHOLDERS,
    NameTemplate,
    sanitise,
)

DEFAULT = NameTemplate(DEFAULT_TEMPLATE)
DAY = PurePosixPath("2024/03/15")
T = "2024-03-15T10:15:02+01:00"  # "20240315-101502" on a PBX in Zurich
UID = "1710497702.42"


def fields(**values: Any) -> dict[str, Any]:
    """A manifest entry as the pipeline hands it over: every field, unknowns None."""
    entry: dict[str, Any] = dict.fromkeys(MANIFEST_FIELDS)
    entry.update(cdr="missing", format="wav", size=48_044, sha256="ab" * 32)
    entry.update(values)
    return entry


def broken_rules(name: str) -> list[str]:
    """Every rule of the issue a shipped name must keep, checked independently of the code."""
    problems = []
    if len(name.encode()) > 255:
        problems.append("over 255 bytes")
    if name.startswith((".", "-")):
        problems.append("hidden or option-like")
    for bad in ("/", "\\", "\0", "..", "%", "#", "?", "<", ">", ":", '"', "|", "*"):
        if bad in name:
            problems.append(f"contains {bad!r}")
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in name):
        problems.append("control, format, surrogate, private or unassigned character")
    if any(ch.isspace() for ch in name):
        problems.append("whitespace")
    if unicodedata.normalize("NFC", name) != name:
        problems.append("not NFC")
    if PurePosixPath(DAY, name).parent != DAY:
        problems.append("not directly inside the day folder")
    if not posixpath.normpath(f"{DAY}/{name}").startswith(f"{DAY}/"):
        problems.append("normpath leaves the day folder")
    return problems


def render(*, template: NameTemplate = DEFAULT, extension: str = "wav", **values: Any) -> str:
    name = template.render(fields(**values), extension=extension)
    assert broken_rules(name) == [], name
    return name


# --- real FreePBX recordings (names as tests/test_spoolnames.py parses them) ---

REAL = [
    pytest.param(  # the example, with the CDR's caller name
        DEFAULT_TEMPLATE,
        dict(kind="in", caller_number="2125550100", caller_name="Bob Buyer", dst="600",
             uniqueid="1710497853.51", started_at=T, cdr="found"),
        "101502_in_2125550100_Bob-Buyer_to_600_1710497853.51.wav",
        id="in-600-2125550100-20240315-101502-1710497853.51.wav",
    ),
    pytest.param(
        DEFAULT_TEMPLATE,
        dict(kind="out", caller_number="1001", caller_name="Alice Agent", dst="18005551234",
             uniqueid=UID, started_at=T, cdr="found", disposition="ANSWERED", billsec=42),
        f"101502_out_1001_Alice-Agent_to_18005551234_{UID}.wav",
        id=f"out-18005551234-1001-20240315-101502-{UID}.wav",
    ),
    pytest.param(  # DID "s" (any DID), no CDR yet
        DEFAULT_TEMPLATE,
        dict(kind="in", caller_number="+41791234567", dst="s", uniqueid=UID, started_at=T),
        f"101502_in_+41791234567_to_s_{UID}.wav",
        id=f"in-s-+41791234567-20240315-101502-{UID}.wav",
    ),
    pytest.param(
        DEFAULT_TEMPLATE,
        dict(kind="q", caller_number="2125550100", caller_name="ACME Corp.", dst="600",
             uniqueid=UID, started_at=T),
        f"101502_q_2125550100_ACME-Corp_to_600_{UID}.wav",
        id=f"q-600-2125550100-20240315-101502-{UID}.wav",
    ),
    pytest.param(  # a withheld number: FreePBX writes "unknown" as the source
        DEFAULT_TEMPLATE,
        dict(kind="rg", caller_number="unknown", dst="601", uniqueid=UID, started_at=T),
        f"101502_rg_unknown_to_601_{UID}.wav",
        id=f"rg-601-unknown-20240315-101502-{UID}.wav",
    ),
    pytest.param(  # conference: no caller at all; participants share a name (the caller numbers)
        DEFAULT_TEMPLATE,
        dict(kind="conf", dst="800", uniqueid=UID, started_at=T),
        f"101502_conf_to_800_{UID}.wav",
        id=f"800-800-always-20240315-101502-{UID}.wav",
    ),
    pytest.param(  # legacy outbound: no dst in the name, summer time
        DEFAULT_TEMPLATE,
        dict(kind="legacy-out", caller_number="201", uniqueid="1213900512.123",
             started_at="2008-06-19T14:35:12+02:00"),
        "143512_legacy-out_201_1213900512.123.wav",  # "to" goes with the empty dst
        id="OUT201-20080619-143512-1213900512.123.wav",
    ),
    pytest.param(  # auto-recording named by caller IDs: no uniqueid
        DEFAULT_TEMPLATE,
        dict(kind="auto", caller_number="1001", dst="1002", started_at="2014-01-17T17:00:00+01:00"),
        "170000_auto_1001_to_1002.wav",
        id="auto-1389974400-1001-1002.wav",
    ),
    pytest.param(  # a systemname in the uniqueid keeps its dashes
        DEFAULT_TEMPLATE,
        dict(kind="out", caller_number="1001", dst="1800", uniqueid="pbx-east-1710497702.42",
             started_at=T),
        "101502_out_1001_to_1800_pbx-east-1710497702.42.wav",
        id="out-1800-1001-20240315-101502-pbx-east-1710497702.42.wav",
    ),
    pytest.param(
        "{started_at:%Y-%m-%d_%H%M}_{date}_{caller_number}_{uniqueid}",
        dict(kind="in", caller_number="2125550100", dst="600", uniqueid=UID, started_at=T),
        f"2024-03-15_1015_20240315_2125550100_{UID}.wav",
        id="custom template: strftime and {date}",
    ),
    pytest.param(  # {date}/{time} are the PBX's wall clock, never converted to UTC
        "{date}-{time}_{did}_{disposition}_{billsec}s",
        dict(did="0441234567", disposition="NO ANSWER", billsec=0,
             started_at="2024-03-15T23:59:59-05:00"),
        "20240315-235959_0441234567_NO-ANSWER_0s.wav",
        id="custom template: wall clock, ints, spaces in a value",
    ),
    pytest.param(  # {started_at} without a format: the ISO text, colons folded
        "{started_at}_{kind}",
        dict(kind="in", started_at=T),
        "2024-03-15T10-15-02+01-00_in.wav",
        id="custom template: raw started_at",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("template", "values", "expected"), REAL)
def test_real_recordings(template: str, values: dict[str, Any], expected: str) -> None:
    assert render(template=NameTemplate(template), **values) == expected


def test_values_that_meet_are_normalised_together() -> None:
    assert render(
        template=NameTemplate("{dst}{caller_name}"), dst="Jose", caller_name="\u0301"
    ) == ("José.wav")


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("{caller_number}_to_{dst}", {"caller_number": "1001"}, "1001.wav"),
        ("{caller_number}_to_{dst}", {"dst": "600"}, "to_600.wav"),
        ("call-{uniqueid}_{date}", {"uniqueid": UID}, f"call-{UID}.wav"),
        ("call-{caller_name}_{uniqueid}", {"uniqueid": UID}, f"{UID}.wav"),
        ("{kind}_q.{dst}_x{{y}}", {"kind": "q"}, "q_x{y}.wav"),
        ("{kind}_q.{dst}_x{{y}}", {"kind": "q", "dst": "600"}, "q_q.600_x{y}.wav"),
    ],
)
def test_a_word_before_an_empty_placeholder_goes_with_it(
    template: str, values: dict[str, Any], expected: str
) -> None:
    assert render(template=NameTemplate(template), **values) == expected


def test_started_at_as_datetime() -> None:
    when = datetime.fromisoformat(T)
    assert render(kind="in", dst="600", uniqueid=UID, started_at=when) == (
        f"101502_in_to_600_{UID}.wav"
    )


def test_unparseable_or_missing_start_leaves_time_out() -> None:
    for started_at in (None, "", "yesterday", 42):
        assert render(kind="in", dst="600", uniqueid=UID, started_at=started_at) == (
            f"in_to_600_{UID}.wav"
        )


def test_extension_is_kept_as_given_and_checked() -> None:
    assert render(extension="WAV", kind="in", uniqueid=UID).endswith(f"_{UID}.WAV")
    assert render(extension="mp3", kind="in", uniqueid=UID).endswith(".mp3")
    for bad in ("", ".wav", "wav/x", "toolongext", "wäv", "w v"):
        with pytest.raises(ValueError, match="extension"):
            DEFAULT.render(fields(uniqueid=UID), extension=bad)


def test_suffix_numbers_a_taken_name_inside_the_budget() -> None:
    values = fields(kind="conf", dst="800", uniqueid=UID, started_at=T)
    assert DEFAULT.render(values, extension="wav", suffix=2) == f"101502_conf_to_800_{UID}-2.wav"
    long = DEFAULT.render(values | {"caller_name": "😀" * 300}, extension="wav", suffix=9999)
    assert len(long.encode()) <= 255
    assert long.endswith(f"_to_800_{UID}-9999.wav")
    with pytest.raises(ValueError, match="suffix"):
        DEFAULT.render(values, extension="wav", suffix=0)


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        (DEFAULT_TEMPLATE, {}, "recording.wav"),  # "to" alone names nothing
        (DEFAULT_TEMPLATE, {"uniqueid": "..."}, "recording.wav"),
        ("{caller_name}", {"uniqueid": UID}, f"{UID}.wav"),
        ("{caller_name}", {"caller_name": "../..", "uniqueid": None}, "recording.wav"),
    ],
)
def test_empty_names_fall_back(template: str, values: dict[str, Any], expected: str) -> None:
    assert render(template=NameTemplate(template), **values) == expected


# --- hostile caller-ID names: each lands in the caller_name slot, or the slot goes away ---

BASE: dict[str, Any] = dict(
    kind="in", caller_number="2125550100", dst="600", uniqueid=UID, started_at=T
)


def named(caller_name: str) -> str:
    """What the default template makes of `caller_name` (with everything else fixed)."""
    name = render(**BASE, caller_name=caller_name)
    head, tail = "101502_in_2125550100_", f"_to_600_{UID}.wav"
    if name == f"101502_in_2125550100_to_600_{UID}.wav":
        return ""
    assert name.startswith(head) and name.endswith(tail), name
    return name[len(head) : -len(tail)]


@pytest.mark.parametrize(
    ("caller_name", "expected"),
    [
        ("../../etc/passwd", "etc-passwd"),
        ("..\\..\\windows\\system32", "windows-system32"),
        ("<script>alert(1)</script>", "script-alert(1)-script"),
        ("\u202eexe.wav", "exe.wav"),  # the RIGHT-TO-LEFT OVERRIDE is gone
        ("Bob\u200bBuyer\u2060\ufeff", "BobBuyer"),  # zero-width space, word joiner, BOM
        ("Bob\x00\x07\x1b[31mBuyer\r\n", "Bob[31mBuyer"),
        ("Bob\tBuyer", "Bob-Buyer"),
        ("%2e%2e%2f", "2e-2e-2f"),
        ("%00", "00"),
        ("..\uff0f..\uff0fetc", "etc"),  # fullwidth solidus: NFKC would make it "/"
        ('Bob: "Boss" | *VIP*?', "Bob-Boss-VIP"),
        ("#1 Fan", "1-Fan"),
        ("-rf --no-preserve-root", "rf-no-preserve-root"),
        (".hidden", "hidden"),
        ("......", ""),
        ("   ", ""),
        ("-_-", ""),
        ("A" * 2048, "A" * 64),
        ("📞 Bob 😀", "📞-Bob-😀"),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f468\U0001f469\U0001f467"),
        ("Иван Петров", "Иван-Петров"),
        ("王小明", "王小明"),
        ("محمد علي", "محمد-علي"),
        ("\u200fمحمد\u200e", "محمد"),  # bidi marks around an Arabic name
        ("Jose\u0301 Mu\u0308ller", "José-Müller"),  # decomposed input comes out NFC
        ("\ue000private\U000e0041tag", "privatetag"),
        ("Jose\u200d\u0301", "José"),  # the joiner goes, the accent joins its letter
    ],
)
def test_hostile_caller_names(caller_name: str, expected: str) -> None:
    assert named(caller_name) == expected


def test_hostile_values_in_every_field() -> None:
    hostile = "../\u202e..\\%2f\x00 \u200b<x>"
    values: dict[str, Any] = {f: hostile for f in MANIFEST_FIELDS if f != "uniqueid"}
    name = render(**values)
    assert "x" in name  # something readable survives


# --- the 255-byte budget ---


def test_long_caller_name_is_cut_first() -> None:
    name = render(**BASE, caller_name="😀" * 300)  # 64 kept, 256 bytes: must be cut
    assert len(name.encode()) <= 255
    assert name == f"101502_in_2125550100_{'😀' * 52}_to_600_{UID}.wav"  # 52 * 4 = 208 bytes


def test_short_caller_name_is_cut_before_a_longer_number() -> None:
    # 288 bytes: the 33 too many come off the caller name although the number is longer.
    name = render(**BASE | {"caller_number": "号" * 64}, caller_name="名" * 20)
    assert name == f"101502_in_{'号' * 64}_{'名' * 9}_to_600_{UID}.wav"


def test_ascii_caller_name_capped_at_64_characters() -> None:
    name = render(**BASE, caller_name="x" * 300)
    assert name == f"101502_in_2125550100_{'x' * 64}_to_600_{UID}.wav"


def test_then_the_longest_other_values() -> None:
    name = render(
        template=NameTemplate("{caller_name}_{caller_number}_{dst}_{kind}_{uniqueid}"),
        caller_name="名" * 64,
        caller_number="号" * 64,
        dst="到" * 30,
        kind="in",
        uniqueid=UID,
    )
    assert len(name.encode()) <= 255
    assert "名" not in name  # the caller name went entirely
    number, dst, kind, uid = name.removesuffix(".wav").split("_")
    assert (dst, kind, uid) == ("到" * 30, "in", UID)  # the shorter ones are whole
    assert number == "号" * len(number) and len(name.encode()) > 250


def test_uniqueid_is_never_cut() -> None:
    uid = "pbx-" + "9" * 200 + ".1"
    name = render(**BASE | {"uniqueid": uid}, caller_name="Bob")
    assert name.endswith(f"_{uid}.wav")
    assert DEFAULT.render(fields(uniqueid="1" * 251), extension="wav") == "1" * 251 + ".wav"
    with pytest.raises(ValueError, match="uniqueid"):
        DEFAULT.render(fields(uniqueid="1" * 252), extension="wav")


# --- template validation (config load) ---


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{caller}_{uniqueid}", r"unknown placeholder \{caller\}; known: billsec, caller_name"),
        ("{time", "bad format syntax"),
        ("time}_{uniqueid}", "bad format syntax"),
        ("{}_{uniqueid}", "positional"),
        ("{0}", "positional"),
        ("{caller_name.upper}", "attribute or index"),
        ("{dst[0]}", "attribute or index"),
        ("{date}/{time}", "the folder is always YYYY/MM/DD/"),
        ("{date}\\{time}", "the folder is always YYYY/MM/DD/"),
        ("recording", "no placeholder"),
        ("", "no placeholder"),
        ("{{uniqueid}}", "no placeholder"),
        ("{dst:>10}", "only started_at takes a format"),
        ("{date:%Y}", "only started_at takes a format"),
        ("{started_at!r}", "conversions are not allowed"),
        ("{started_at:%Y/%m/%d}_{uniqueid}", "the folder is always"),
        ("{started_at:{dst}}", "nested"),
        ("{started_at:Ymd}", "strftime"),
        ("{date} {time}", "whitespace is not allowed"),
        ("{date}%{time}", "'%' is not allowed"),
        ("{date}#{time}", "'#' is not allowed"),
        ("{date}..{time}", r"'\.\.' is not allowed"),
        ("{date}\x00{time}", "is not allowed"),
        ("{date}\u202e{time}", "is not allowed"),
        ("x" * 129 + "{uniqueid}", "fixed text is over 128 bytes"),
    ],
)
def test_template_errors(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NameTemplate(template)


def test_placeholders_are_the_manifest_fields_plus_date_and_time() -> None:
    assert "file" not in PLACEHOLDERS
    assert {"date", "time", "started_at", "uniqueid", "caller_name", "cdr"} <= PLACEHOLDERS
    assert len(PLACEHOLDERS) == 18
    for field in PLACEHOLDERS:  # each one alone is a valid template
        assert NameTemplate(f"{{{field}}}").fields == {field}


def test_templates_compare_by_text() -> None:
    assert NameTemplate(DEFAULT_TEMPLATE) == DEFAULT
    assert hash(NameTemplate(DEFAULT_TEMPLATE)) == hash(DEFAULT)
    assert NameTemplate("{uniqueid}") != DEFAULT
    assert "NameTemplate(" in repr(DEFAULT)


# --- properties ---

NASTY = ["/", "\\", "..", ".", "-", "_", " ", "\x00", "\u202e", "\u200b", "%", "#", "?", "\uff0f"]
NASTY += ["e\u0301", "\u0958", "\U0001d160", "\u212b", "😀", "王"]  # NFC changes, wide
ANY_CHAR = st.one_of(
    st.characters(),
    st.characters(exclude_categories=()),  # surrogates, private use and unassigned too
    st.characters(categories=["M", "Cf", "Zs", "Zl", "Zp"]),  # accents, bidi, odd spaces
)
TEXT = st.lists(st.one_of(ANY_CHAR, st.sampled_from(NASTY)), max_size=80).map("".join)
VALUE = st.one_of(st.none(), TEXT, st.integers(), st.text(max_size=3000))
SANE_UID = st.from_regex(r"\A([a-z][a-z0-9]{0,11}-){0,2}[0-9]{9,10}\.[0-9]{1,6}\Z")
TEMPLATES = st.sampled_from(
    [
        DEFAULT_TEMPLATE,
        "{caller_name}",
        "{date}_{time}_{caller_name}.{dst}.{uniqueid}",
        "{started_at:%Y-%m-%d_%H%M}_{caller_name}_{caller_number}_{did}_{uniqueid}",
        "{original}-{linkedid}-{disposition}-{cdr}-{format}-{sha256}-{duration}-{uniqueid}",
        "{caller_number}{caller_name}{dst}x{kind}{uniqueid}",  # values that touch
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    template=TEMPLATES,
    values=st.fixed_dictionaries({field: VALUE for field in MANIFEST_FIELDS}),
)
@example(template=DEFAULT_TEMPLATE, values=dict.fromkeys(MANIFEST_FIELDS, "../" * 1000))
def test_no_input_escapes_the_day_folder(template: str, values: dict[str, Any]) -> None:
    name_template = NameTemplate(template)
    try:
        name = name_template.render(values, extension="wav")
    except ValueError as exc:
        # Only a uniqueid too long for any file name may be refused.
        uid = sanitise(values["uniqueid"], cap=None)
        assert "uniqueid" in str(exc) and len(uid.encode()) > 255 - len(".wav")
        return
    assert broken_rules(name) == []
    assert name.endswith(".wav")


@settings(max_examples=200, deadline=None)
@given(uniqueid=SANE_UID, values=st.fixed_dictionaries({f: VALUE for f in MANIFEST_FIELDS}))
def test_a_sane_uniqueid_appears_unchanged(uniqueid: str, values: dict[str, Any]) -> None:
    name = DEFAULT.render(values | {"uniqueid": uniqueid}, extension="wav")
    assert broken_rules(name) == []
    assert re.search(rf"(^|_){re.escape(uniqueid)}\.wav$", name), name


@given(text=VALUE)
@example(text="e\u200d\u0301")
def test_sanitised_values_are_safe_and_stable(text: object) -> None:
    clean = sanitise(text)
    assert len(clean) <= 64
    assert sanitise(clean) == clean  # idempotent: a stored name re-sanitises to itself
    if clean:
        assert broken_rules(clean + ".wav") == []
        assert not clean.endswith(("_", "-", "."))
