"""Settle: a spool file is READY only when MixMonitor is done with it."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.spool import settle as settle_module
from agent.spool.settle import (
    OPEN_RECHECK_SECONDS,
    Settled,
    Verdict,
    open_files_under,
    quiet_seconds,
    settle,
)
from agent.spool.wavheader import is_complete, read_layout, repaired, wav_header
from tests.support.mixmonitor import BURST, MixMonitorWriter, audio, write_recording

SETTLE = 5.0
STALE = 900.0
OFFSET = {"wav": 44, "WAV": 60}
RIFF_FORMATS: list[Literal["wav", "WAV"]] = ["wav", "WAV"]


def mtime(path: Path) -> float:
    return path.stat().st_mtime


def check(path: Path, now: float, *, open_paths: frozenset[str] | None = None) -> Settled:
    return settle(path, now=now, settle_seconds=SETTLE, stale_seconds=STALE, open_paths=open_paths)


def age(path: Path, seconds: float) -> float:
    """Make `path` look last written `seconds` ago; return that mtime."""
    then = mtime(path) - seconds
    os.utime(path, (then, then))
    return then


# --- a recording in progress ---------------------------------------------------------


@pytest.mark.parametrize("fmt", RIFF_FORMATS)
def test_open_and_growing_file_is_never_ready(tmp_path: Path, fmt: Literal["wav", "WAV"]) -> None:
    path = tmp_path / f"out-100-200-20240315-101502-1710497702.42.{fmt}"
    with MixMonitorWriter(path, fmt) as w:
        sizes = []
        for i in range(5):
            w.write(audio(BURST // 2 + 7, seed=i))
            sizes.append(path.stat().st_size)
            t = mtime(path)
            opened = open_files_under(tmp_path)
            assert os.path.realpath(path) in opened
            for now in (t, t + SETTLE * 10, t + STALE * 10):
                held = check(path, now, open_paths=opened)
                assert held == Settled(
                    Verdict.WAIT, "open by a process", recheck_at=now + OPEN_RECHECK_SECONDS
                )
            # Without /proc the zero header alone holds it back until stale_seconds.
            unknown = check(path, t + STALE - 1)
            assert unknown.verdict is Verdict.WAIT
            assert unknown.reason == "header sizes still 0"
            assert unknown.recheck_at == t + STALE
    assert sizes[0] < sizes[-1]  # it grew, in whole bursts
    assert all((s - OFFSET[fmt]) % BURST == 0 for s in sizes)


@pytest.mark.parametrize("fmt", RIFF_FORMATS)
def test_closed_recording_is_ready_at_once_when_proc_can_vouch(
    tmp_path: Path, fmt: Literal["wav", "WAV"]
) -> None:
    path = tmp_path / f"rec.{fmt}"
    data = write_recording(path, seconds=3, fmt=fmt, seed=1)
    t = mtime(path)
    layout = read_layout(data)
    assert layout is not None and is_complete(layout, len(data))
    open_now = open_files_under(tmp_path)
    assert open_now == frozenset()

    done = check(path, t, open_paths=open_now)
    assert done.verdict is Verdict.READY
    assert not done.repair_header


@pytest.mark.parametrize("fmt", RIFF_FORMATS)
def test_closed_recording_waits_quiet_period_when_proc_is_blind(
    tmp_path: Path, fmt: Literal["wav", "WAV"]
) -> None:
    # wav49 (and old Asterisk's wav) keep the sizes current while recording: without the
    # /proc check, agreeing sizes need a quiet period too.
    path = tmp_path / f"rec.{fmt}"
    write_recording(path, seconds=3, fmt=fmt, seed=1)
    t = mtime(path)
    early = check(path, t + 1, open_paths=None)
    assert early.verdict is Verdict.WAIT
    assert early.recheck_at == t + quiet_seconds(path, SETTLE)
    assert check(path, t + quiet_seconds(path, SETTLE)).verdict is Verdict.READY


def test_reopened_file_waits_again_then_ready(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    w = MixMonitorWriter(path)
    w.write(audio(BURST * 2, seed=2))
    w.close()
    first_size = path.stat().st_size
    assert check(path, mtime(path) + SETTLE).verdict is Verdict.READY

    w.reopen()  # pause/resume: same file, sizes back to 0
    try:
        assert check(path, mtime(path) + SETTLE).reason == "header sizes still 0"
        assert check(path, mtime(path), open_paths=open_files_under(tmp_path)).reason == (
            "open by a process"
        )
        w.write(audio(BURST, seed=3))
        assert check(path, mtime(path) + SETTLE).verdict is Verdict.WAIT
    finally:
        w.close()
    assert path.stat().st_size == first_size + BURST
    assert check(path, mtime(path) + SETTLE).verdict is Verdict.READY


# --- nothing to ship -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", RIFF_FORMATS)
def test_header_only_file_has_no_audio(tmp_path: Path, fmt: Literal["wav", "WAV"]) -> None:
    path = tmp_path / f"unanswered.{fmt}"
    MixMonitorWriter(path, fmt).close()
    assert path.stat().st_size == OFFSET[fmt]
    assert check(path, mtime(path) + 1).verdict is Verdict.WAIT
    result = check(path, mtime(path) + 60, open_paths=frozenset())
    assert result.verdict is Verdict.NO_AUDIO


# --- Asterisk crashed ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", RIFF_FORMATS)
def test_stale_zero_header_ships_repaired(tmp_path: Path, fmt: Literal["wav", "WAV"]) -> None:
    path = tmp_path / f"crashed.{fmt}"
    w = MixMonitorWriter(path, fmt)
    w.write(audio(BURST * 3 + 100, seed=4))
    w.crash()  # the last partial burst is lost, sizes stay 0
    size = path.stat().st_size
    assert size == OFFSET[fmt] + BURST * 3

    then = age(path, STALE - 1)
    assert check(path, then + STALE - 1).recheck_at == then + STALE
    result = check(path, then + STALE, open_paths=frozenset())
    assert result.verdict is Verdict.READY
    assert result.repair_header

    head = path.read_bytes()[:4096]
    fixed = repaired(head, size)
    assert len(fixed) == OFFSET[fmt]
    layout = read_layout(fixed)
    assert layout is not None and is_complete(layout, size)
    assert fixed == wav_header(fmt, size - OFFSET[fmt])  # what Asterisk would have written


@pytest.mark.parametrize("fmt", RIFF_FORMATS)
def test_stale_header_without_audio_has_no_audio(
    tmp_path: Path, fmt: Literal["wav", "WAV"]
) -> None:
    path = tmp_path / f"crashed.{fmt}"
    w = MixMonitorWriter(path, fmt)
    w.write(audio(100))
    w.crash()
    then = age(path, STALE)
    assert check(path, then + STALE).verdict is Verdict.NO_AUDIO


def test_stale_but_open_still_waits(tmp_path: Path) -> None:
    path = tmp_path / "long-call.wav"
    with MixMonitorWriter(path) as w:
        w.write(audio(BURST))
        then = age(path, STALE * 2)
        result = check(path, then + STALE * 2, open_paths=open_files_under(tmp_path))
        assert result.verdict is Verdict.WAIT


# --- headerless formats --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gsm", "ulaw", "alaw", "sln", "g729", "mp3"])
def test_headerless_quiet_period(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"rec.{fmt}"
    write_recording(path, seconds=2, fmt=fmt)
    t = mtime(path)
    need = quiet_seconds(path, SETTLE)
    assert need >= SETTLE
    assert check(path, t + 1) == Settled(Verdict.WAIT, "changed 1s ago", recheck_at=t + need)
    assert check(path, t + need, open_paths=frozenset()).verdict is Verdict.READY


def test_slow_formats_wait_longer_than_one_burst(tmp_path: Path) -> None:
    # gsm fills a 32 KiB burst in ~20 s: a 5 s pause between bursts is not the end.
    assert quiet_seconds(tmp_path / "a.gsm", SETTLE) > BURST / 1650
    assert quiet_seconds(tmp_path / "a.g729", SETTLE) > BURST / 1000
    assert quiet_seconds(tmp_path / "a.mp3", SETTLE) == SETTLE
    assert quiet_seconds(tmp_path / "a.wav", 60) == 60


def test_empty_headerless_file_has_no_audio(tmp_path: Path) -> None:
    path = tmp_path / "rec.ulaw"
    path.touch()
    assert check(path, mtime(path) + 1).verdict is Verdict.WAIT
    assert check(path, mtime(path) + 60).verdict is Verdict.NO_AUDIO


def test_wav_without_riff_bytes_is_headerless(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    path.write_bytes(b"\x01\x02" * 1000)
    assert check(path, mtime(path) + 1).verdict is Verdict.WAIT
    assert check(path, mtime(path) + 60).verdict is Verdict.READY


def test_vanished_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check(tmp_path / "gone.wav", 0.0, open_paths=frozenset())


# --- wav49 ---------------------------------------------------------------------------


def test_wav49_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rec.WAV"
    data = write_recording(path, seconds=1, fmt="WAV", seed=5)
    # 25 blocks of 65 bytes = 1625: odd, so Asterisk pads one byte on close.
    assert len(data) == 60 + 1625 + 1
    assert data[:60] == wav_header("WAV", 1626)
    assert read_layout(data) == read_layout(wav_header("WAV", 1626))
    assert struct.unpack_from("<I", data, 48)[0] == 25 * 320  # fact: samples
    assert check(path, mtime(path) + 60).verdict is Verdict.READY


def test_read_layout_walks_chunks() -> None:
    fmt = wav_header("wav", 0)[12:36]  # the 'fmt ' chunk
    odd = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\0"  # odd size, padded
    body = b"WAVE" + fmt + odd + b"data" + struct.pack("<I", 10)
    head = b"RIFF" + struct.pack("<I", len(body) + 10) + body
    layout = read_layout(head)
    assert layout is not None
    assert layout.data_offset == len(head)
    assert is_complete(layout, len(head) + 10)
    assert not is_complete(layout, len(head) + 12)


# --- header parsing never trips ------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [b"", b"RIFF", b"RIFF\0\0\0\0WAVE", b"RIFF\0\0\0\0WAVEfmt ", b"RIFX" + bytes(40), b"ID3"],
)
def test_read_layout_rejects_short_or_foreign_input(head: bytes) -> None:
    assert read_layout(head) is None
    with pytest.raises(ValueError):
        repaired(head, 100)


def test_read_layout_needs_whole_data_header() -> None:
    assert read_layout(wav_header("wav", 0)[:43]) is None


@given(st.binary(max_size=512))
def test_read_layout_never_raises(head: bytes) -> None:
    read_layout(head)
    read_layout(b"RIFF\0\0\0\0WAVE" + head)


@given(
    st.sampled_from(RIFF_FORMATS),
    st.integers(min_value=0, max_value=10**8),
    st.integers(min_value=0, max_value=10**8),
)
def test_repaired_is_complete_for_any_size(
    fmt: Literal["wav", "WAV"], declared: int, audio_bytes: int
) -> None:
    header = wav_header(fmt, declared)
    layout = read_layout(header)
    assert layout is not None
    assert layout.data_offset == OFFSET[fmt] == len(header)
    assert is_complete(layout, OFFSET[fmt] + declared)
    size = OFFSET[fmt] + audio_bytes
    fixed = read_layout(repaired(header, size))
    assert fixed is not None and is_complete(fixed, size)


# --- /proc ---------------------------------------------------------------------------


def test_open_files_under_sees_this_process(tmp_path: Path) -> None:
    inside = tmp_path / "spool" / "a.wav"
    inside.parent.mkdir()
    outside = tmp_path / "elsewhere.wav"
    link = tmp_path / "link"
    link.symlink_to(inside.parent)
    with inside.open("wb"), outside.open("wb"):
        found = open_files_under(link)  # a symlinked root is resolved
        assert os.path.realpath(inside) in found
        assert os.path.realpath(outside) not in found
    assert open_files_under(inside.parent) == frozenset()


def test_open_files_under_counts_writers_not_readers(tmp_path: Path) -> None:
    """A playback, a backup or a script reading a finished recording cannot change it,
    and its close sends no event that would wake the agent: it must not hold it up."""
    path = tmp_path / "a.wav"
    write_recording(path)
    with path.open("rb"):
        assert open_files_under(tmp_path) == frozenset()
    for mode in ("ab", "r+b"):
        with path.open(mode):
            assert open_files_under(tmp_path) == {os.path.realpath(path)}, mode


def test_an_fd_closed_while_the_scan_looked_at_it_is_no_writer(tmp_path: Path) -> None:
    """The scan lists an fd, then reads its flags: a reader that closed in between (another
    destination's staging copy, in this very process) is gone, not a writer."""
    path = tmp_path / "a.wav"
    write_recording(path)
    with path.open("rb") as reader:
        fd = os.dup2(reader.fileno(), 900)  # a number nothing else takes meanwhile
    os.close(fd)
    assert not settle_module._may_write(str(os.getpid()), str(fd))
    with path.open("ab") as writer:
        assert settle_module._may_write(str(os.getpid()), str(writer.fileno()))
