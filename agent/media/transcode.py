"""MP3 for the shipped copy: smaller than telephone WAV, and playable where GSM or G.711 is not.

PCM WAV, G.711 (u-law, A-law) and raw slin are decoded here and encoded with lameenc;
GSM, wav49 and G.729 go through `ffmpeg` when it is installed. lameenc writes bare frames,
so an Info/LAME header frame is put in front: it gives players the exact length and
gapless decoders the encoder delay and padding to trim. What cannot be converted here
returns None with one log line, and the caller ships the original format.
"""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import sys
import wave
from array import array
from collections.abc import Generator, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from agent.errors import TransientError
from agent.log import kv

log = logging.getLogger(__name__)

FORMATS = ("none", "mp3")
QUALITY = 2  # LAME's "high quality" algorithm choice; 0 is much slower for no audible gain
ENCODER_DELAY = 576  # samples LAME puts in front when it does not resample
FFMPEG_TIMEOUT_SECONDS = 300

_RAW_RATE = 8000  # headerless Asterisk formats are always 8 kHz mono
_CHUNK_FRAMES = 1 << 16
_MP3_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
_IN_PROCESS = frozenset({"wav", "ulaw", "alaw", "sln"})
# ffmpeg's demuxer (and, for raw audio, its rate) for each format as it is found on disk.
_FFMPEG_INPUT: dict[str, tuple[str, ...]] = {
    "wav": ("-f", "wav"),  # a .wav the wave module cannot read (8/24-bit, float, odd rates)
    "WAV": ("-f", "wav"),  # wav49: GSM 6.10 in RIFF
    "gsm": ("-f", "gsm"),
    "g729": ("-f", "g729"),
    "ulaw": ("-f", "mulaw", "-ar", str(_RAW_RATE)),
    "alaw": ("-f", "alaw", "-ar", str(_RAW_RATE)),
    "sln": ("-f", "s16le", "-ar", str(_RAW_RATE)),
}


class _CannotConvert(Exception):
    """This file cannot be converted here; the reason goes to the log."""


def ffmpeg_formats(extensions: Iterable[str]) -> list[str]:
    """Which of these formats only ffmpeg converts here."""
    return [fmt for fmt in extensions if fmt in _FFMPEG_INPUT and fmt not in _IN_PROCESS]


def can_transcode(fmt: str) -> bool:
    """True when `to_mp3` can convert files of `fmt` (the extension as on disk) here."""
    return fmt in _IN_PROCESS or (fmt in _FFMPEG_INPUT and shutil.which("ffmpeg") is not None)


def to_mp3(src: Path, fmt: str, dst: Path, *, bitrate_kbps: int = 16) -> Path | None:
    """Write `src` (in format `fmt`) as a mono MP3 to `dst` and return `dst`.

    None (with one warning line, `dst` removed) when this file cannot be converted here:
    the caller ships it unchanged. Errors of our own disk raise TransientError. `src`
    is only read. LAME clamps the bitrate to what the sample rate allows (8-64 at 8 kHz).
    """
    try:
        try:
            pcm = _open_pcm(src, fmt) if fmt in _IN_PROCESS else None
            if pcm is not None:
                return _encode(pcm, dst, bitrate_kbps)
            return _ffmpeg_mp3(src, fmt, dst, bitrate_kbps)
        except OSError as exc:
            dst.unlink(missing_ok=True)
            raise TransientError(f"transcode {src.name}: {exc.strerror or exc}") from exc
    except _CannotConvert as exc:
        dst.unlink(missing_ok=True)
        log.warning(kv("transcode-skipped", file=src.name, format=fmt, reason=str(exc)))
        return None


# --- reading PCM -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pcm:
    rate: int
    chunks: Generator[bytes, None, None]  # mono signed 16-bit, native byte order


def _open_pcm(src: Path, fmt: str) -> _Pcm | None:
    """The audio of `src` as PCM, or None when this module cannot decode it (try ffmpeg)."""
    if fmt == "wav":
        return _open_wav(src)
    decode = {"ulaw": _ULAW, "alaw": _ALAW}.get(fmt)
    return _Pcm(_RAW_RATE, _raw_chunks(src, decode))


def _open_wav(src: Path) -> _Pcm | None:
    try:
        reader = wave.open(str(src), "rb")  # noqa: SIM115 - the generator below closes it
    except (wave.Error, EOFError):
        return None  # not PCM (wav49 named .wav, float, extensible): ffmpeg may know it
    width, channels, rate = reader.getsampwidth(), reader.getnchannels(), reader.getframerate()
    if width != 2 or channels not in (1, 2) or rate not in _MP3_RATES:
        reader.close()
        return None
    return _Pcm(rate, _wav_chunks(reader, channels))


def _wav_chunks(reader: wave.Wave_read, channels: int) -> Generator[bytes, None, None]:
    with closing(reader):
        while data := reader.readframes(_CHUNK_FRAMES):
            data = data[: len(data) - len(data) % (2 * channels)]  # a torn last frame
            samples = _native(data)
            yield (_downmix(samples) if channels == 2 else samples).tobytes()


def _raw_chunks(src: Path, table: tuple[bytes, bytes] | None) -> Generator[bytes, None, None]:
    """Headerless 8 kHz audio: G.711 through `table`, or slin (s16le) when None."""
    with src.open("rb") as fh:
        while data := fh.read(_CHUNK_FRAMES * (1 if table else 2)):
            if table is None:
                yield _native(data[: len(data) - len(data) % 2]).tobytes()
            else:
                yield _native(_g711(data, table)).tobytes()


def _native(le: bytes) -> array[int]:
    samples = array("h")
    samples.frombytes(le)
    if sys.byteorder == "big":  # WAV and slin are little-endian on disk
        samples.byteswap()
    return samples


def _downmix(stereo: array[int]) -> array[int]:
    # The ffmpeg path asks for one channel too: a call sounds the same and costs half.
    return array("h", [(a + b) >> 1 for a, b in zip(stereo[0::2], stereo[1::2], strict=True)])


# --- G.711 -------------------------------------------------------------------------------
# Decoded by table rather than audioop (deprecated, gone in Python 3.13). The formulas are
# those of the ITU-T reference (Sun's g711.c), which Asterisk's tables follow too.


def _ulaw_sample(code: int) -> int:
    u = ~code & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - magnitude if u & 0x80 else magnitude - 0x84


def _alaw_sample(code: int) -> int:
    a = code ^ 0x55
    segment = (a & 0x70) >> 4
    magnitude = (a & 0x0F) << 4
    magnitude = magnitude + 8 if segment == 0 else (magnitude + 0x108) << max(segment - 1, 0)
    return magnitude if a & 0x80 else -magnitude


# The 16-bit sample of each G.711 code.
ULAW = tuple(_ulaw_sample(code) for code in range(256))
ALAW = tuple(_alaw_sample(code) for code in range(256))


def _byte_tables(values: tuple[int, ...]) -> tuple[bytes, bytes]:
    """Low and high bytes of each 16-bit value: two `bytes.translate` tables."""
    return bytes(v & 0xFF for v in values), bytes((v >> 8) & 0xFF for v in values)


_ULAW, _ALAW = _byte_tables(ULAW), _byte_tables(ALAW)


def _g711(codes: bytes, table: tuple[bytes, bytes]) -> bytes:
    """Little-endian s16 samples; two C-speed translates instead of a Python loop."""
    out = bytearray(2 * len(codes))
    out[0::2] = codes.translate(table[0])
    out[1::2] = codes.translate(table[1])
    return bytes(out)


# --- encoding ----------------------------------------------------------------------------


def _encode(pcm: _Pcm, dst: Path, bitrate_kbps: int) -> Path:
    import lameenc  # here: only an agent that makes MP3s loads it

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate_kbps)
    encoder.set_in_sample_rate(pcm.rate)
    encoder.set_out_sample_rate(pcm.rate)  # never resample: the delay stays ENCODER_DELAY
    encoder.set_channels(1)
    encoder.set_quality(QUALITY)
    samples = 0
    with closing(pcm.chunks), dst.open("wb") as out:
        stream = _Stream(out)
        try:
            for chunk in pcm.chunks:
                samples += len(chunk) // 2
                stream.write(bytes(encoder.encode(chunk)))
            if samples == 0:
                raise _CannotConvert("no audio")
            stream.write(bytes(encoder.flush()))
        except RuntimeError as exc:  # lameenc's only error: refused parameters or input
            raise _CannotConvert(f"lame: {exc}") from exc
        stream.finish(samples)
    return dst


def _ffmpeg_mp3(src: Path, fmt: str, dst: Path, bitrate_kbps: int) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    if fmt not in _FFMPEG_INPUT:
        raise _CannotConvert("no decoder for this format")
    if ffmpeg is None:
        raise _CannotConvert(
            f"converting {fmt} needs ffmpeg, which is not installed (apt-get install ffmpeg)"
        )
    args = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *_FFMPEG_INPUT[fmt]]
    args += ["-i", str(src), "-ac", "1", "-codec:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k"]
    # ffmpeg's Info frame carries exact delay and padding, but signs it "Lavc…"; mutagen only
    # trusts those fields under a LAME name, and it is libmp3lame that encodes.
    args += ["-metadata:s:a:0", f"encoder={_LAME_VERSION.decode()}", "-y", str(dst)]
    try:
        done = subprocess.run(
            args, capture_output=True, timeout=FFMPEG_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise _CannotConvert(f"ffmpeg took over {FFMPEG_TIMEOUT_SECONDS} s") from exc
    except OSError as exc:  # a broken ffmpeg install, not our disk
        raise _CannotConvert(f"ffmpeg did not start: {exc}") from exc
    if done.returncode != 0 or not dst.is_file() or dst.stat().st_size == 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise _CannotConvert(f"ffmpeg exit {done.returncode}: {lines[-1] if lines else ''}")
    return dst


# --- the MPEG stream and its Info frame ----------------------------------------------------

_KBPS = {
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2, 2.5
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_XING_SIZE = 120  # "Info", flags, frames, bytes, 100-entry TOC, quality
_LAME_SIZE = 36
_LAME_VERSION = b"LAME3.100"  # the LAME that lameenc bundles; 9 bytes as the tag wants


@dataclass(frozen=True)
class _Header:
    """One MPEG-1/2/2.5 Layer III frame header."""

    raw: int

    @classmethod
    def parse(cls, data: bytes) -> _Header:
        (raw,) = struct.unpack(">I", data)
        header = cls(raw)
        valid = (raw >> 21) == 0x7FF and header.version in _RATES and (raw >> 17) & 3 == 1
        if not valid or not 0 < header.bitrate_index < 15 or (raw >> 10) & 3 == 3:
            raise _CannotConvert(f"lame wrote no MPEG Layer III frame header: {data.hex()}")
        return header

    @property
    def version(self) -> int:
        return (self.raw >> 19) & 3

    @property
    def mpeg1(self) -> bool:
        return self.version == 3

    @property
    def bitrate_index(self) -> int:
        return (self.raw >> 12) & 0xF

    @property
    def kbps(self) -> int:
        return _KBPS[self.mpeg1][self.bitrate_index]

    @property
    def rate(self) -> int:
        return _RATES[self.version][(self.raw >> 10) & 3]

    @property
    def samples(self) -> int:
        return 1152 if self.mpeg1 else 576

    @property
    def length(self) -> int:
        padding = (self.raw >> 9) & 1
        return (144 if self.mpeg1 else 72) * self.kbps * 1000 // self.rate + padding

    @property
    def side_info(self) -> int:
        mono = (self.raw >> 6) & 3 == 3
        if self.mpeg1:
            return 17 if mono else 32
        return 9 if mono else 17

    def for_info(self) -> _Header:
        """This header at the lowest bitrate whose frame holds the Info and LAME tags.

        At 8 kHz and 16 kbit/s a frame is 144 bytes, too small: like ffmpeg, we raise
        the bitrate of this one silent frame rather than leave fields out."""
        for index in range(self.bitrate_index, 15):
            header = replace(self, raw=(self.raw & ~0xF200) | index << 12)  # no padding
            if header.length >= 4 + header.side_info + _XING_SIZE + _LAME_SIZE:
                return header
        raise _CannotConvert("no frame size holds the Info tag")


class _Stream:
    """Writes lame's frames after room for the Info frame, counting what it needs."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pending = b""  # output held back until the first header says the frame size
        self.first: _Header | None = None
        self.frames = 0
        self.size = 0
        self.crc = 0
        self._skip = 0  # bytes of the current frame not yet seen
        self._carry = b""  # a header split across two writes

    def write(self, data: bytes) -> None:
        if self.first is None:
            self._pending += data
            if len(self._pending) < 4:
                return
            self.first = _Header.parse(self._pending[:4])
            self._out.write(bytes(self.first.for_info().length))  # filled in by finish()
            data, self._pending = self._pending, b""
        self._count(data)
        self.crc = crc16(data, self.crc)
        self.size += len(data)
        self._out.write(data)

    def _count(self, data: bytes) -> None:
        buf = self._carry + data
        pos = self._skip
        while pos + 4 <= len(buf):
            pos += _Header.parse(buf[pos : pos + 4]).length
            self.frames += 1
        self._skip = max(0, pos - len(buf))
        self._carry = buf[pos:]

    def finish(self, samples: int) -> None:
        """Write the Info frame over the room left for it."""
        if self.first is None or self._carry or self._skip:
            raise _CannotConvert("lame's output ends inside a frame header")
        padding = self.frames * self.first.samples - ENCODER_DELAY - samples
        if not 0 <= padding < 4096:
            raise _CannotConvert(f"unexpected encoder padding {padding}")
        frame = _info_frame(self.first, self.frames, self.size, padding, self.crc)
        self._out.seek(0)
        self._out.write(frame)


def _info_frame(first: _Header, frames: int, audio_bytes: int, padding: int, crc: int) -> bytes:
    """The Xing "Info" (CBR) frame with a LAME tag, as LAME itself would write it.

    `frames` and `audio_bytes` count the audio after this frame; `crc` is their CRC-16.
    """
    header = first.for_info()
    total = header.length + audio_bytes  # the tag counts its own frame in the byte total
    toc = bytes(i * 256 // 100 for i in range(100))  # constant bitrate: a straight line
    xing = b"Info" + struct.pack(">III", 0x0F, frames, total) + toc
    xing += struct.pack(">I", 100 - 10 * 4 - QUALITY)  # LAME's quality indicator (-V4 -q2)
    lame = _LAME_VERSION + bytes([0x01, 0])  # tag revision 0, CBR; lowpass unknown
    lame += bytes(4 + 2 + 2 + 1)  # peak, replay gains, flags + ATH type: unknown
    lame += bytes([min(first.kbps, 255)])
    lame += (ENCODER_DELAY << 12 | padding).to_bytes(3, "big")
    lame += bytes(1 + 1 + 2)  # misc (source rate, mono), MP3 gain, preset
    lame += struct.pack(">IH", total, crc)
    frame = bytearray(header.length)
    struct.pack_into(">I", frame, 0, header.raw)
    start = 4 + header.side_info  # the side info stays zero: a silent frame to old decoders
    body = xing + lame
    frame[start : start + len(body)] = body
    end = start + len(body)
    frame[end : end + 2] = struct.pack(">H", crc16(bytes(frame[:end])))
    return bytes(frame)


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16 = _crc_table()


def crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16/ARC, the checksum of the LAME tag (and of its music data)."""
    table = _CRC16
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc
