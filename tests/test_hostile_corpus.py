"""Hostile input corpus (issue 9): file names, CDR text, lying WAV headers, zero-byte and
large files, symlinks, FIFOs and files vanishing mid-run, each driven through a real agent.

The cases come from `generate()` (fixed seed) and are also kept, reviewable, in
`tests/corpus/hostile.json`; `RECSYNC_REGEN_CORPUS=1` rewrites that file. One agent run per
group of cases (one spool per group) keeps the suite fast; every case is then its own test.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.cdr.sqlite import SqliteCdr
from agent.daemon import Agent
from agent.spool.wavheader import read_layout
from agent.spoolnames import DEFAULT_EXTENSIONS
from agent.store.state import Store
from agent.transport.local import LocalTransport
from tests.conftest import Site
from tests.support.cdr import SqliteCdrFile, cdr_row
from tests.support.mixmonitor import audio, write_recording

CORPUS = Path(__file__).parent / "corpus" / "hostile.json"
# Each case's expected final state and reason (null: not a recording's name, never a row).
# Recorded from the agent and reviewed case by case; never regenerated: a change of outcome
# is a change of behaviour to review.
EXPECTED = json.loads((CORPUS.parent / "hostile-expected.json").read_text())
SEED = 20240315
DAY = "2024/03/15"
TERMINAL = {"done", "skipped", "quarantined"}
# What no shipped name may hold: control characters, bidi controls, zero-width characters.
BIDI_AND_ZERO_WIDTH = set("\u061c\u200b\u200c\u200d\u200e\u200f\u2060\ufeff") | {
    chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
}
IS_ROOT = os.geteuid() == 0

# --- the generator ---------------------------------------------------------------------

# Pieces of file names: path tricks, absolute-looking text, control, bidi and zero-width
# characters, shell and HTML metacharacters, other scripts' digits.
NAME_BITS = [
    "..",
    "...",
    "..\\..",
    "%2e%2e%2f",
    "..%2f..",
    "\\etc\\passwd",
    "C:\\Windows",
    "\u2215etc\u2215passwd",
    "\uff0fetc\uff0fpasswd",
    "~root",
    "$(id)",
    "`id`",
    "'; DROP TABLE recordings; --",
    '"quoted"',
    "<script>alert(1)<\u2215script>",
    "a b c",
    "*?[]",
    "#frag",
    "%s%n%x",
    "{0.__class__}",
    "{caller_name}",
    "&amp;",
    "|;&",
    "\u202eevil\u202c",
    "\u2066iso\u2069",
    "zero\u200bwidth",
    "bom\ufeff",
    "\u200e\u200f",
    "\u0661\u0662\u0663",
    "\uff11\uff12\uff13",
    "caf\u00e9",
    "\U0001f600",
    "\u00ad",
    "\x7f",
    "\t",
    "\n",
    "\r",
    "\x1b[31m",
    "\x01\x02",
    "-",
    "--",
    " ",
    "+41 44 000 00 00",
]
CONTROL_CHARS = [chr(c) for c in range(1, 32)] + ["\x7f", "\x85"]
KINDS = ["out", "in", "internal", "external", "q", "rg", "ondemand", "exten", "force", "auto"]

# Text a CDR may hold (caller name, number, destination, clid).
CDR_BITS = [
    '"',
    "'",
    '"Front" <Desk>',
    "'; DROP TABLE cdr; --",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\windows",
    "\x00nul",
    "\x1b[2J\x1b[31mred",
    "line\nbreak",
    "cr\rlf\r\n",
    "tab\there",
    "\u202eevil\u202c",
    "zero\u200bwidth\ufeff",
    "{caller_name}{0}",
    "%s%n",
    "$(reboot)",
    "`id`",
    "\\",
    "caf\u00e9 \u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9",
    "\u0645\u062d\u0645\u062f",
    "\U0001f4de\U0001f600",
    "",
]


def _freepbx(kind: str, dst: str, src: str, date: str, clock: str, uid: str, ext: str) -> str:
    if kind == "auto":
        return f"auto-1710497702-{dst}-{src}.{ext}"
    return f"{kind}-{dst}-{src}-{date}-{clock}-{uid}.{ext}"


def _add(cases: list[dict[str, Any]], group: str, name: str, **values: Any) -> None:
    assert "/" not in name and "\0" not in name, name
    assert len(name.encode()) <= 255, name
    folder = values.pop("folder", DAY)
    cases.append(
        {"id": f"{group}-{len(cases):03d}", "group": group, "folder": folder, "name": name} | values
    )


def generate() -> list[dict[str, Any]]:
    """The corpus: a list of cases, the same for the same seed."""
    rng = random.Random(SEED)
    cases: list[dict[str, Any]] = []
    n = 0

    def uid() -> str:
        nonlocal n
        n += 1
        return f"1710497702.{n}"

    # File names: FreePBX-like names with hostile dst/src fields.
    for i, bit in enumerate(NAME_BITS):
        kind = KINDS[i % len(KINDS)]
        other = rng.choice(["600", "1001", "2125550100", rng.choice(NAME_BITS)])
        dst, src = (bit, other) if i % 2 else (other, bit)
        _add(cases, "names", _freepbx(kind, dst, src, "20240315", "101502", uid(), "wav"))
    # Every control character once, in a dst field and in the uniqueid's place.
    for i, ch in enumerate(CONTROL_CHARS):
        where = i % 3
        dst = f"21255{ch}50100" if where == 0 else "2125550100"
        src = f"10{ch}01" if where == 1 else "1001"
        tail = f"{uid()}{ch}x" if where == 2 else uid()
        _add(cases, "names", _freepbx("in", dst, src, "20240315", "101502", tail, "wav"))
    # Impossible dates and times.
    for date, clock in [
        ("20241332", "101502"),
        ("20240230", "101502"),
        ("20240000", "101502"),
        ("00000000", "000000"),
        ("99999999", "999999"),
        ("20240315", "256199"),
        ("20240315", "240000"),
        ("20240315", "106060"),
        ("19691231", "235959"),
        ("00010101", "000000"),
        ("20240229", "101502"),
        ("20230229", "101502"),
        ("2024031", "101502"),
        ("202403155", "101502"),
    ]:
        _add(cases, "names", _freepbx("out", "18005551234", "1001", date, clock, uid(), "wav"))
    # Very long names: 250 bytes of ASCII, of two-byte and of four-byte characters.
    for filler in ["9", "\u00e9", "\U0001f600", "\u202e", "..", "\u200b"]:
        head = _freepbx("out", "", "1001", "20240315", "101502", uid(), "wav")
        room = 250 - len(head.encode())
        dst = filler * (room // len(filler.encode()))
        _add(cases, "names", _freepbx("out", dst, "1001", "20240315", "101502", uid(), "wav"))
    _add(cases, "names", "x" * 251 + ".wav")  # 255 bytes: the most a name can have
    _add(cases, "names", "out-" + "1" * 247 + ".wav")
    # Wrong, odd and missing extensions; names that are not FreePBX's at all.
    plain = _freepbx("out", "18005551234", "1001", "20240315", "101502", "{}", "{}")
    for ext in ["txt", "wav.txt", "WAV.bak", "wav~", "wav ", "Wav", "php", "html", "", "mp3"]:
        name = plain.format(uid(), ext).rstrip(".") if ext else plain.format(uid(), "")[:-1]
        _add(cases, "names", name)
    _add(cases, "names", plain.format(uid(), "gsm"))  # WAV content under another extension
    _add(cases, "names", plain.format(uid(), "ulaw"))
    for name in [
        "..wav.wav",
        ".hidden.wav",
        "..wav",
        "-.wav",
        " .wav",
        "\n.wav",
        "\u202e.wav",
        "wav",
        "greeting.wav",
        "out-.wav",
        "out--.wav",
        "out-----20240315-101502-.wav",
        "in-600-1001-20240315-101502-.wav",
        "in-600-1001-20240315-101502- .wav",
        "in-600-1001-20240315-101502-\t.wav",
        "call-1001-in.wav",
        "in-600-1001-20240315-101502-1.2-out.wav",
        "OUT201-20240315-101502-..wav",
        "OUT-201-..-20240315-101502-1.3.wav",
        "q..-20240315-101502-1.4.wav",
        "g600-20240315-101502-1.5.wav",
        "auto-99999999999999999999-x.wav",
        "auto--.wav",
        "600-600-always-20240315-101502-1.6.wav",
        "20240315-101502-\u0661.\u0662.wav",
    ]:
        _add(cases, "names", name)
    # The same hostile names in the flat (FreePBX 2.x) spool root.
    for bit in ["..", "\u202e", "<script>", "\x1b", "$(id)"]:
        name = _freepbx("in", "600", bit, "20240315", "101502", uid(), "wav")
        _add(cases, "names", name, folder="")

    # CDR text: a real SQLite CDR row per recording, hostile in cnam, cnum, dst and clid.
    for i in range(48):
        row: dict[str, str] = {}
        for column in ("cnam", "cnum", "dst", "clid"):
            bits = rng.sample(CDR_BITS, 2)
            row[column] = "".join(bits)
        if i % 8 == 0:
            row["cnam"] = ("A" * 1024 + "\u00e9" * 512)[: 2048 - 1] + "<"  # 2 KB and more
        if i % 8 == 1:
            row["cnum"] = "".join(rng.choice(CDR_BITS) for _ in range(200))[:2048]
        if i % 8 == 2:
            row["clid"] = '"' + "x" * 2048 + '" <' + "9" * 2048 + ">"
        if not row["cnam"]:
            row["cnam"] = '"'
        if not row["cnum"]:
            row["cnum"] = "'"
        u = uid()
        name = _freepbx("out", "18005551234", "1001", "20240315", "1015" + f"{i:02d}", u, "wav")
        _add(cases, "cdr", name, cdr=row, uniqueid=u)

    # WAV headers that lie about their sizes.
    lies = [
        "riff_big",
        "riff_small",
        "data_big",
        "data_small",
        "both_big",
        "both_small",
        "riff_max",
        "data_max",
        "zero_sizes",
        "no_data_chunk",
        "fmt_huge",
        "data_odd",
        "not_riff",
        "riff_not_wave",
        "only_riff",
        "data_before_fmt",
        "two_data_chunks",
        "junk_chunk",
    ] + [f"truncated_{k}" for k in (1, 4, 8, 12, 16, 20, 24, 36, 40, 43)]
    for lie in lies:
        for ext in ("wav", "WAV") if lie in ("riff_big", "data_small", "zero_sizes") else ("wav",):
            name = _freepbx("in", "600", "2125550100", "20240315", "101502", uid(), ext)
            _add(cases, "wav", name, content=f"lie:{lie}", seed=rng.randrange(1000))

    # Zero-byte and large files, symlinks, FIFOs, vanishing and unreadable files.
    specials = [
        "zero",
        "zero",
        "zero",
        "large",
        "symlink_inside",
        "symlink_outside",
        "symlink_dangling",
        "symlink_loop",
        "symlink_dir",
        "fifo",
        "fifo",
        "vanish",
        "vanish",
        "vanish_replaced_by_fifo",
        "chmod000",
        "chmod000_fifo",
    ]
    for i, special in enumerate(specials):
        ext = ["wav", "WAV", "gsm"][i % 3] if special == "zero" else "wav"
        name = _freepbx("out", "18005551234", "1001", "20240315", "101502", uid(), ext)
        _add(cases, "special", name, content=special)
    return cases


def load() -> list[dict[str, Any]]:
    if os.environ.get("RECSYNC_REGEN_CORPUS") == "1":
        CORPUS.parent.mkdir(exist_ok=True)
        CORPUS.write_text(json.dumps(generate(), indent=1, ensure_ascii=True) + "\n")
    cases: list[dict[str, Any]] = json.loads(CORPUS.read_text())
    return cases


CASES = load()
GROUPS = sorted({c["group"] for c in CASES})


def rel_of(case: dict[str, Any]) -> str:
    return f"{case['folder']}/{case['name']}" if case["folder"] else case["name"]


def tracked(case: dict[str, Any]) -> bool:
    """Whether the agent keeps a row for this spool file (a recording extension, not a
    dot file); others it ignores by design."""
    name = case["name"]
    _, dot, ext = name.rpartition(".")
    return bool(dot) and not name.startswith(".") and ext in DEFAULT_EXTENSIONS


# --- making the files ------------------------------------------------------------------


def _lying_wav(lie: str, seed: int, fmt: str) -> bytes:
    if lie.startswith("truncated_"):
        return _real_wav(seed, fmt)[: int(lie.split("_")[1])]
    good = bytearray(_real_wav(seed, fmt))
    layout = read_layout(bytes(good))
    assert layout is not None
    size_at = layout.data_offset - 4

    def put(at: int, value: int) -> None:
        good[at : at + 4] = struct.pack("<I", value & 0xFFFFFFFF)

    riff, data = len(good) - 8, len(good) - layout.data_offset
    if lie == "riff_big":
        put(4, riff + 100_000)
    elif lie == "riff_small":
        put(4, 12)
    elif lie == "data_big":
        put(size_at, data + 100_000)
    elif lie == "data_small":
        put(size_at, 2)
    elif lie == "both_big":
        put(4, riff * 10)
        put(size_at, data * 10)
    elif lie == "both_small":
        put(4, 36)
        put(size_at, 0)
    elif lie == "riff_max":
        put(4, 0xFFFFFFFF)
    elif lie == "data_max":
        put(size_at, 0xFFFFFFFF)
    elif lie == "zero_sizes":
        put(4, 0)
        put(size_at, 0)
    elif lie == "no_data_chunk":
        good[size_at - 4 : size_at] = b"dat\0"
    elif lie == "fmt_huge":
        put(16, 0x7FFFFFF0)
    elif lie == "data_odd":
        good += b"\x01"
    elif lie == "not_riff":
        good[0:4] = b"RIFX"
    elif lie == "riff_not_wave":
        good[8:12] = b"AVI "
    elif lie == "only_riff":
        return bytes(good[:12])
    elif lie == "data_before_fmt":
        fmt_chunk = bytes(good[12 : size_at - 4])
        body = bytes(good[size_at - 4 :])
        return bytes(good[:12]) + body + fmt_chunk
    elif lie == "two_data_chunks":
        good += b"data" + struct.pack("<I", 1000) + audio(1000, seed)
    elif lie == "junk_chunk":
        good[12:12] = b"JUNK" + struct.pack("<I", 0xFFFFFF00) + b"\0" * 8
    else:
        raise AssertionError(lie)
    return bytes(good)


def _real_wav(seed: int, fmt: str) -> bytes:
    from tests.support.mixmonitor import MixMonitorWriter

    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"recsync-corpus-{os.getpid()}-{seed}.{fmt}"
    try:
        with MixMonitorWriter(scratch, "WAV" if fmt == "WAV" else "wav") as w:
            w.write(audio(1625 if fmt == "WAV" else 1600, seed))
        return scratch.read_bytes()
    finally:
        scratch.unlink(missing_ok=True)


def _make(site: Site, case: dict[str, Any]) -> None:
    path = site.spool_file(rel_of(case))
    content = case.get("content", "wav")
    fmt = case["name"].rpartition(".")[2]
    if content == "wav":
        write_recording(path, seconds=0.1, seed=len(case["id"]))
    elif content.startswith("lie:"):
        path.write_bytes(_lying_wav(content[4:], case["seed"], fmt))
    elif content == "zero":
        path.write_bytes(b"")
    elif content == "large":
        write_recording(path, seconds=250, seed=7)  # 4 MB
    elif content == "symlink_inside":
        target = site.spool_file(f"{DAY}/inside-target.dat")
        write_recording(target, seconds=0.1)
        path.symlink_to(target.name)
    elif content == "symlink_outside":
        target = site.root / "outside.wav"
        write_recording(target, seconds=0.1)
        path.symlink_to(target)
    elif content == "symlink_dangling":
        path.symlink_to(site.root / "nowhere.wav")
    elif content == "symlink_loop":
        path.symlink_to(path.name)
    elif content == "symlink_dir":
        path.symlink_to("/etc")
    elif content in ("fifo", "vanish_replaced_by_fifo"):
        if content == "fifo":
            os.mkfifo(path)
        else:
            write_recording(path, seconds=0.1)
    elif content == "vanish":
        write_recording(path, seconds=0.1)
    elif content == "chmod000":
        write_recording(path, seconds=0.1)
        path.chmod(0)
    elif content == "chmod000_fifo":
        os.mkfifo(path, 0)
    else:
        raise AssertionError(content)


def _age_all(root: Path, seconds: float) -> None:
    """Every spool entry last written `seconds` ago: settled, and stale if incomplete."""
    stamp = time.time() - seconds
    for p in root.rglob("*"):
        os.utime(p, (stamp, stamp), follow_symlinks=False)


def _snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    found: dict[str, tuple[Any, ...]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if stat.S_ISDIR(st.st_mode):
            continue  # a folder's mtime moves when a case deletes its file
        rel = p.relative_to(root).as_posix()
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o444:
            found[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
        elif stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(p), st.st_mtime_ns)
        else:
            found[rel] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_size, st.st_mtime_ns)
    return found


@dataclass
class Outcome:
    """What one agent run over one group's spool left."""

    site: Site
    error: BaseException | None = None
    rows: dict[str, tuple[str, str | None, str | None] | None] = field(default_factory=dict)
    before: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    after: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    manifests: dict[str, Any] = field(default_factory=dict)  # original -> entry
    manifest_errors: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)  # FIFOs the agent blocked on


def _unblock_fifos(
    site: Site, cases: list[dict[str, Any]], out: Outcome, stop: threading.Event
) -> None:
    """A FIFO can only be opened for writing while someone holds it open for reading: if
    that works, the agent is stuck opening it. Note the case and let the agent go on."""
    fifos = [c for c in cases if "fifo" in c.get("content", "")]
    while not stop.wait(0.2):
        for case in fifos:
            try:
                fd = os.open(site.spool / rel_of(case), os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            os.close(fd)
            out.blocked.add(case["id"])


def _run_group(group: str, root: Path) -> Outcome:
    site = Site(root, root / "spool", root / "dest", root / "state", root / "config.toml")
    for folder in (site.spool, site.dest, site.state):
        folder.mkdir()
    out = Outcome(site=site)
    cases = [c for c in CASES if c["group"] == group]
    runnable = [c for c in cases if not (IS_ROOT and c.get("content", "").startswith("chmod"))]
    for case in runnable:
        _make(site, case)
    cdr_file = SqliteCdrFile(root / "master.db")
    for case in runnable:
        if "cdr" in case:
            row = cdr_row(case["uniqueid"], recordingfile=case["name"], **case["cdr"])
            cdr_file.insert(row)
    _age_all(site.spool, 3600)
    out.before = _snapshot(site.spool)
    config = site.config(
        spool={"backfill_days": 100_000, "stale_seconds": 60, "settle_seconds": 1},
        tags={"enabled": True},
        index={"enabled": True},
        cdr={"type": "sqlite", "path": str(cdr_file.path), "wait_seconds": 0.5},
    )
    store = Store.open(config.state.path)
    agent = Agent(
        config=config,
        store=store,
        transport=LocalTransport(root=config.destination.root),
        cdr=SqliteCdr(path=cdr_file.path, table="cdr"),
        webhook=None,
        watch=False,
    )
    stop = threading.Event()
    unblocker = threading.Thread(target=_unblock_fifos, args=(site, runnable, out, stop))
    unblocker.start()
    try:
        agent.start(time.time())  # observed: rows exist; now files go away
        for case in runnable:
            if case.get("content", "").startswith("vanish"):
                path = site.spool / rel_of(case)
                path.unlink()
                out.gone.add(rel_of(case))
                if case["content"] == "vanish_replaced_by_fifo":
                    os.mkfifo(path)
        agent.run_until_idle()
        agent.run_once(time.time() + 120)  # anything still waiting on short timers
        for case in runnable:
            row = store.by_stem(rel_of(case).rpartition(".")[0])
            out.rows[case["id"]] = (row.state, row.reason, row.remote_path) if row else None
    except BaseException as exc:
        out.error = exc
    finally:
        stop.set()
        unblocker.join()
        agent.close()
        store.close()
    out.after = _snapshot(site.spool)
    for manifest in site.dest.rglob("manifest.json"):
        try:
            for entry in json.loads(manifest.read_text())["recordings"]:
                out.manifests[entry["original"]] = entry
        except (ValueError, KeyError, TypeError) as exc:
            out.manifest_errors.append(f"{manifest}: {exc}")
    return out


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return {}


def outcome_of(group: str, outcomes: dict[str, Outcome], factory: Any) -> Outcome:
    if group not in outcomes:
        outcomes[group] = _run_group(group, factory.mktemp(f"corpus-{group}"))
    return outcomes[group]


def bad_name(name: str) -> str | None:
    if len(name.encode()) > 255:
        return f"{len(name.encode())} bytes"
    for ch in name:
        if ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 or ch in BIDI_AND_ZERO_WIDTH:
            return f"holds {ch!r}"
    return None


# --- the tests -------------------------------------------------------------------------


def test_corpus_file_is_what_the_generator_makes() -> None:
    assert generate() == CASES
    assert EXPECTED.keys() == {c["id"] for c in CASES}  # every case has its expectation
    assert len(CASES) >= 200
    assert len({c["id"] for c in CASES}) == len(CASES)
    stems = [rel_of(c).rpartition(".")[0] if tracked(c) else rel_of(c) for c in CASES]
    for group in GROUPS:
        mine = [s for s, c in zip(stems, CASES, strict=True) if c["group"] == group]
        assert len(set(mine)) == len(mine), group


# Agent bugs the corpus found: case id -> what goes wrong (xfail, strict).
KNOWN_BUGS: dict[str, str] = {}


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = []
        if case["id"] in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case["id"]]))
        if IS_ROOT and case.get("content", "").startswith("chmod"):
            marks.append(pytest.mark.skip(reason="root reads a chmod 000 file anyway"))
        params.append(pytest.param(case, id=case["id"], marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_case_ends_in_a_clear_state(
    case: dict[str, Any], outcomes: dict[str, Outcome], tmp_path_factory: Any
) -> None:
    out = outcome_of(case["group"], outcomes, tmp_path_factory)
    assert out.error is None, f"the agent raised: {out.error!r}"
    rel = rel_of(case)
    assert case["id"] not in out.blocked, "the agent blocked opening a FIFO"
    got = out.rows[case["id"]]
    expected = EXPECTED[case["id"]]
    content = case.get("content", "wav")
    if expected is None:
        assert got is None, "no row expected"
    else:
        assert got is not None, "no row for a recording file"
        assert (got[0], got[1]) == (expected["state"], expected["reason"])
    if not tracked(case):
        assert got is None  # not a recording's name: ignored, never shipped
        assert all(e["original"] != rel for e in out.manifests.values())
    else:
        assert got is not None, "no row for a recording file"
        state, reason, remote = got
        assert state in TERMINAL, (state, reason)
        if state != "done":
            assert reason, state
        else:
            assert remote
            shipped = out.site.dest / remote
            assert shipped.resolve().is_relative_to(out.site.dest.resolve())
            assert shipped.is_file()
            for part in remote.split("/"):
                assert bad_name(part) is None, (remote, bad_name(part))
            entry = out.manifests.get(rel)
            assert entry is not None, "shipped without a manifest entry"
            assert entry["file"] == remote
            if "cdr" in case:
                assert entry["cdr"] == "found"
                assert entry["caller_name"] == case["cdr"]["cnam"]
                assert entry["caller_number"] == case["cdr"]["cnum"]
        if content.startswith("symlink") or content == "fifo":
            assert (state, reason) == ("quarantined", "not a regular file (symlink, FIFO ...)")
        if content == "vanish":
            assert (state, reason) == ("quarantined", "vanished before it was shipped")
        if content == "vanish_replaced_by_fifo":
            assert state == "quarantined"
        if content == "zero":
            assert state == "skipped" and reason
        if "cdr" in case or content == "large":
            assert state == "done"
    if rel not in out.gone:
        assert out.after.get(rel) == out.before.get(rel), "the spool file changed"


@pytest.mark.parametrize("group", GROUPS)
def test_destination_stays_inside_and_readable(
    group: str, outcomes: dict[str, Outcome], tmp_path_factory: Any
) -> None:
    out = outcome_of(group, outcomes, tmp_path_factory)
    assert out.error is None, f"the agent raised: {out.error!r}"
    dest = out.site.dest.resolve()
    for p in out.site.dest.rglob("*"):
        assert p.resolve().is_relative_to(dest), p
        assert not p.is_symlink(), p
        rel = p.relative_to(out.site.dest).as_posix()
        for part in rel.split("/"):
            assert bad_name(part) is None, (rel, bad_name(part))
        assert not p.name.startswith(".recsync-"), f"temporary left: {rel}"
    assert out.manifest_errors == []
    assert out.manifests, "no manifest at all"
    for page in out.site.dest.rglob("*.html"):
        assert "<script>alert(1)" not in page.read_text(), page
    assert {k: v for k, v in out.after.items() if k not in out.gone} == {
        k: v for k, v in out.before.items() if k not in out.gone
    }
