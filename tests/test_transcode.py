"""MP3 from what Asterisk writes: exact length, gapless, readable by mutagen and ffmpeg."""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import shutil
import struct
import subprocess
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from mutagen.mp3 import MP3, BitrateMode

from agent.errors import TransientError
from agent.media.transcode import ALAW, FORMATS, ULAW, can_transcode, crc16, to_mp3
from tests.support.mixmonitor import MixMonitorWriter, write_recording
from tests.support.servers import require_program

RATE = 8000
FRAME = 576  # samples in one MPEG-2.5 Layer III frame: the tolerance the issue allows


def tool(name: str) -> str:
    """The path of a Debian ffmpeg program; a failure in CI, a skip elsewhere."""
    return require_program(name, "ffmpeg")


def tone(seconds: float, rate: int = RATE) -> array[int]:
    """A call-like signal: 440 Hz, switched between loud and soft every quarter second."""
    n = round(seconds * rate)
    return array(
        "h",
        (
            round(
                (8000 if (i * 4 // rate) % 2 == 0 else 2000)
                * math.sin(2 * math.pi * 440 * i / rate)
            )
            for i in range(n)
        ),
    )


def write_wav(path: Path, samples: array[int]) -> None:
    """As Asterisk writes it: MixMonitor's 44-byte header, sizes patched on close."""
    with MixMonitorWriter(path, "wav") as writer:
        writer.write(samples.tobytes())


def g711_encode(samples: array[int], table: tuple[int, ...]) -> bytes:
    """The code whose decoded value is nearest each sample (a test-side encoder)."""
    ranked = sorted(range(256), key=lambda code: table[code])
    values = [table[code] for code in ranked]
    out = bytearray()
    for sample in samples:
        i = bisect.bisect_left(values, sample)
        near = min((j for j in (i - 1, i) if 0 <= j < 256), key=lambda j: abs(values[j] - sample))
        out.append(ranked[near])
    return bytes(out)


def decode(path: Path, *args: str) -> array[int]:
    """What ffmpeg plays: mono s16 samples (encoder delay and padding trimmed)."""
    out = subprocess.run(
        [tool("ffmpeg"), "-v", "error", *args, "-i", str(path), "-f", "s16le", "-ac", "1", "-"],
        capture_output=True,
        check=True,
    )
    samples = array("h")
    samples.frombytes(out.stdout)
    return samples


def probed_samples(path: Path) -> int:
    """How many samples ffprobe decodes (gapless trimming applied)."""
    args = ["-select_streams", "a:0", "-show_entries", "frame=nb_samples", "-of", "json"]
    out = subprocess.run(
        [tool("ffprobe"), "-v", "error", *args, str(path)], capture_output=True, check=True
    )
    return sum(int(frame["nb_samples"]) for frame in json.loads(out.stdout)["frames"])


def correlation(a: array[int], b: array[int], lag: int) -> float:
    """Normalised correlation of a with b shifted by `lag` samples."""
    pairs = [(a[i], b[i + lag]) for i in range(1000, min(len(a), len(b)) - 1000)]
    dot = sum(x * y for x, y in pairs)
    norm = math.sqrt(sum(x * x for x, _ in pairs) * sum(y * y for _, y in pairs))
    return dot / norm


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The module's log lines (its own handler: agent.log.setup may stop propagation)."""
    handler = Records()
    logger = logging.getLogger("agent.media.transcode")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


@pytest.fixture
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)


def test_the_formats() -> None:
    assert FORMATS == ("none", "mp3")


def test_g711_tables_hold_the_reference_values() -> None:
    # ITU-T G.711 as in Sun's g711.c and Asterisk: codes are stored inverted (u-law) or
    # with even bits flipped (A-law), so silence is 0xFF / 0xD5.
    assert (ULAW[0xFF], ULAW[0x7F], ULAW[0x00], ULAW[0x80]) == (0, 0, -32124, 32124)
    assert (ULAW[0xF0], ULAW[0x70]) == (120, -120)
    assert (ALAW[0xD5], ALAW[0x55], ALAW[0xAA], ALAW[0x2A]) == (8, -8, 32256, -32256)
    assert len(set(ULAW)) == 255  # +0 and -0 decode alike
    assert len(set(ALAW)) == 256


@pytest.mark.parametrize(("fmt", "table"), [("mulaw", ULAW), ("alaw", ALAW)])
def test_g711_tables_agree_with_ffmpeg(tmp_path: Path, fmt: str, table: tuple[int, ...]) -> None:
    path = tmp_path / "codes"
    path.write_bytes(bytes(range(256)))
    assert list(decode(path, "-f", fmt, "-ar", "8000")) == list(table)


def test_crc16_is_crc16_arc() -> None:
    assert crc16(b"123456789") == 0xBB3D  # the catalogue check value of CRC-16/ARC
    assert crc16(b"56789", crc16(b"1234")) == 0xBB3D


def test_wav_to_mp3_has_the_exact_length(tmp_path: Path) -> None:
    source = tone(3.4567)
    wav = tmp_path / "call.wav"
    write_wav(wav, source)
    before = sha256(wav)
    mp3 = to_mp3(wav, "wav", tmp_path / "call.mp3")
    assert mp3 == tmp_path / "call.mp3"
    assert sha256(wav) == before  # the source is only read

    info = MP3(mp3).info
    assert abs(info.length - len(source) / RATE) <= FRAME / RATE
    assert round(info.length * RATE) == len(source)  # exactly, from the Info/LAME tag
    assert (info.sample_rate, info.channels, info.bitrate) == (RATE, 1, 16000)
    assert info.bitrate_mode == BitrateMode.CBR
    assert info.encoder_info == "LAME 3.100.0+"

    # ffprobe, an independent reader, decodes exactly the source's samples. (Its container
    # "duration" is frames x 576, as for any LAME file: it includes LAME's encoder delay
    # and end padding, 1152 to 1727 samples at 8 kHz, and shows the delay as start_time.)
    assert probed_samples(mp3) == len(source)
    played = decode(mp3)
    assert len(played) == len(source)
    # Gapless: delay and padding trimmed at the right place, not a sample early or late.
    best = max(range(-3, 4), key=lambda lag: correlation(source, played, lag))
    assert best == 0
    assert correlation(source, played, 0) > 0.95


def test_a_minute_is_about_an_eighth_of_the_wav(tmp_path: Path) -> None:
    wav = tmp_path / "call.wav"
    write_recording(wav, seconds=60)
    mp3 = to_mp3(wav, "wav", tmp_path / "call.mp3")
    assert mp3 is not None
    ratio = wav.stat().st_size / mp3.stat().st_size
    assert 7.5 < ratio < 8.5, ratio
    assert round(MP3(mp3).info.length * RATE) == 60 * RATE


def test_the_info_frame_is_what_lame_writes(tmp_path: Path) -> None:
    wav = tmp_path / "call.wav"
    write_wav(wav, tone(2))
    mp3 = to_mp3(wav, "wav", tmp_path / "call.mp3")
    assert mp3 is not None
    data = mp3.read_bytes()
    (header,) = struct.unpack(">I", data[:4])
    assert header >> 21 == 0x7FF and (header >> 12) & 0xF == 3  # 24 kbit/s: 216 bytes
    frame, audio = data[:216], data[216:]
    xing = 4 + 9  # MPEG-2.5 mono: header and side information
    assert frame[4:xing] == bytes(9)  # a silent frame for decoders that know no tags
    assert frame[xing : xing + 8] == b"Info\0\0\0\x0f"
    frames, total = struct.unpack(">II", frame[xing + 8 : xing + 16])
    assert (frames, total) == (len(audio) // 144, len(data))
    lame = xing + 120
    assert frame[lame : lame + 9] == b"LAME3.100"
    delay_padding = int.from_bytes(frame[lame + 21 : lame + 24], "big")
    assert delay_padding >> 12 == 576
    assert frames * 576 - 576 - (delay_padding & 0xFFF) == 2 * RATE
    music_length, music_crc, tag_crc = struct.unpack(">IHH", frame[lame + 28 : lame + 36])
    assert music_length == len(data)
    assert music_crc == crc16(audio)
    assert tag_crc == crc16(frame[: lame + 34])


@pytest.mark.parametrize("fmt", ["ulaw", "alaw", "sln"])
def test_headerless_formats_decode_in_process(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    source = tone(2.5)
    raw = {
        "ulaw": lambda: g711_encode(source, ULAW),
        "alaw": lambda: g711_encode(source, ALAW),
        "sln": source.tobytes,
    }[fmt]()
    path = tmp_path / f"call.{fmt}"
    path.write_bytes(raw)
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "which", lambda _name: None)  # proves it needs no ffmpeg
        assert can_transcode(fmt)
        mp3 = to_mp3(path, fmt, tmp_path / "call.mp3")
    assert mp3 is not None
    assert path.read_bytes() == raw
    assert round(MP3(mp3).info.length * RATE) == len(source)
    assert logged == []
    played = decode(mp3)
    assert len(played) == len(source)
    assert correlation(source, played, 0) > 0.95  # a wrong table would not correlate


def test_stereo_and_wideband_wav(tmp_path: Path) -> None:
    left = tone(1.5, rate=16000)
    stereo = array("h", (s for pair in zip(left, left, strict=True) for s in pair))
    wav = tmp_path / "call.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(stereo.tobytes())
    mp3 = to_mp3(wav, "wav", tmp_path / "call.mp3")
    assert mp3 is not None
    info = MP3(mp3).info
    assert (info.channels, info.sample_rate) == (1, 16000)
    assert round(info.length * 16000) == len(left)


def test_gsm_through_ffmpeg(tmp_path: Path) -> None:
    wav = tmp_path / "source.wav"
    write_wav(wav, tone(3))
    gsm = tmp_path / "call.gsm"
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", str(wav), "-c:a", "libgsm", "-f", "gsm", str(gsm)],
        check=True,
    )
    before = sha256(gsm)
    assert can_transcode("gsm")
    mp3 = to_mp3(gsm, "gsm", tmp_path / "call.mp3")
    assert mp3 is not None
    assert sha256(gsm) == before
    samples = len(decode(gsm, "-f", "gsm"))  # GSM rounds up to whole 160-sample frames
    assert round(MP3(mp3).info.length * RATE) == samples
    assert len(decode(mp3)) == samples


def test_wav49_through_ffmpeg(tmp_path: Path) -> None:
    tool("ffmpeg")
    path = tmp_path / "call.WAV"
    write_recording(path, seconds=2, fmt="WAV")  # Asterisk's 60-byte GSM-in-RIFF header
    mp3 = to_mp3(path, "WAV", tmp_path / "call.mp3")
    assert mp3 is not None
    assert abs(MP3(mp3).info.length - 2) <= FRAME / RATE


def test_an_unconvertible_format_ships_unchanged(
    tmp_path: Path, no_ffmpeg: None, logged: list[str]
) -> None:
    path = tmp_path / "call.g729"
    write_recording(path, seconds=1, fmt="g729")
    before = sha256(path)
    assert not can_transcode("g729")
    assert to_mp3(path, "g729", tmp_path / "call.mp3") is None
    assert len(logged) == 1
    assert logged[0].startswith("WARNING event=transcode-skipped file=call.g729 format=g729 ")
    assert 'reason="converting g729 needs ffmpeg, which is not installed' in logged[0]
    assert "apt-get install ffmpeg" in logged[0]
    assert not (tmp_path / "call.mp3").exists()
    assert sha256(path) == before


def test_a_wav_this_module_cannot_read_needs_ffmpeg(
    tmp_path: Path, no_ffmpeg: None, logged: list[str]
) -> None:
    path = tmp_path / "call.wav"
    with wave.open(str(path), "wb") as out:  # 8-bit PCM: not what the wave reader here takes
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(bytes(8000))
    assert to_mp3(path, "wav", tmp_path / "call.mp3") is None
    assert len(logged) == 1


def test_ffmpeg_failing_is_one_log_line(tmp_path: Path, logged: list[str]) -> None:
    tool("ffmpeg")
    path = tmp_path / "call.WAV"
    path.write_bytes(b"RIFF but not really" * 10)
    dst = tmp_path / "call.mp3"
    assert to_mp3(path, "WAV", dst) is None
    assert len(logged) == 1
    assert "ffmpeg exit" in logged[0]
    assert not dst.exists()


def test_no_audio_is_not_converted(tmp_path: Path, logged: list[str]) -> None:
    path = tmp_path / "call.wav"
    write_recording(path, seconds=0)
    assert to_mp3(path, "wav", tmp_path / "call.mp3") is None
    assert logged == ['WARNING event=transcode-skipped file=call.wav format=wav reason="no audio"']
    assert not (tmp_path / "call.mp3").exists()


def test_our_own_disk_failing_is_transient(tmp_path: Path) -> None:
    wav = tmp_path / "call.wav"
    write_recording(wav, seconds=1)
    with pytest.raises(TransientError):
        to_mp3(wav, "wav", tmp_path / "missing-folder" / "call.mp3")


def test_what_can_be_transcoded_with_and_without_ffmpeg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    formats = ("wav", "ulaw", "alaw", "sln", "gsm", "WAV", "g729")
    monkeypatch.setattr(shutil, "which", lambda _name: "/usr/bin/ffmpeg")
    assert all(can_transcode(f) for f in formats)
    assert not can_transcode("mp3")  # already is
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert [f for f in formats if can_transcode(f)] == ["wav", "ulaw", "alaw", "sln"]
