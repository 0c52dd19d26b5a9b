"""RIFF/WAVE headers as Asterisk writes them (formats/format_wav.c, format_wav_gsm.c).

Pure functions over bytes: reading where the audio starts and what the sizes claim,
and patching the sizes of a header that a crashed Asterisk left at 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

_U32 = struct.Struct("<I")
_CHUNK = struct.Struct("<4sI")
_RIFF_START = 12  # "RIFF", size, "WAVE"; the first chunk follows
_WAV49 = 49  # WAVE_FORMAT_GSM610, Asterisk's "wav49" / ".WAV"
_GSM_BLOCK = 65  # one wav49 block: two GSM frames
_GSM_BLOCK_SAMPLES = 320


@dataclass(frozen=True)
class WavLayout:
    """What a RIFF header declares, and where its audio starts."""

    riff_size: int  # bytes 4..7 as declared
    data_offset: int  # first audio byte (44 for Asterisk PCM .wav, 60 for wav49 .WAV)
    data_size: int  # the data chunk's declared size


def read_layout(head: bytes) -> WavLayout | None:
    """The layout of a RIFF/WAVE header in `head` (the file's first bytes), or None.

    None when `head` is not RIFF/WAVE or holds no 'data' chunk header. Never raises.
    """
    found = _find_data(head)
    if found is None:
        return None
    data_offset, data_size = found
    (riff_size,) = _U32.unpack_from(head, 4)
    return WavLayout(riff_size=riff_size, data_offset=data_offset, data_size=data_size)


def is_complete(layout: WavLayout, file_size: int) -> bool:
    """True when both declared sizes agree with the file's length (Asterisk closed it)."""
    return layout.riff_size == file_size - 8 and layout.data_offset + layout.data_size == file_size


def repaired(head: bytes, file_size: int) -> bytes:
    """The header part of `head` (up to the audio) with its sizes set for `file_size`.

    For wav49 the 'fact' sample count is set too, with Asterisk's own formula. Raises
    ValueError when `head` is not a RIFF/WAVE header or the file is shorter than it.
    """
    found = _find_data(head)
    if found is None:
        raise ValueError("not a RIFF/WAVE header with a data chunk")
    data_offset, _ = found
    if not data_offset <= file_size <= 0xFFFFFFFF:
        raise ValueError(f"file size {file_size} does not fit a header of {data_offset} bytes")
    data_size = file_size - data_offset
    out = bytearray(head[:data_offset])
    _U32.pack_into(out, 4, file_size - 8)
    _U32.pack_into(out, data_offset - 4, data_size)
    fact = _fact_samples_offset(head, data_offset)
    if fact is not None:
        _U32.pack_into(out, fact, data_size // _GSM_BLOCK * _GSM_BLOCK_SAMPLES)
    return bytes(out)


def wav_header(fmt: Literal["wav", "WAV"], data_size: int) -> bytes:
    """The header Asterisk writes, with sizes set for `data_size` bytes of audio.

    "wav": PCM 16-bit mono 8000 Hz, 44 bytes. "WAV": wav49 (GSM 6.10 in RIFF), 60 bytes
    with 'fmt ', 'fact' and 'data' chunks. While recording Asterisk leaves the sizes at 0
    instead; the test writer zeroes them itself.
    """
    if fmt == "wav":
        fmt_chunk = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
        extra = b""
    else:
        # Field widths as Asterisk writes them: byte rate 1625, block align 65 (as 32 bits),
        # 2 extra bytes holding 320 samples per block.
        fmt_chunk = struct.pack("<HHIIIHH", _WAV49, 1, 8000, 1625, _GSM_BLOCK, 2, 320)
        samples = data_size // _GSM_BLOCK * _GSM_BLOCK_SAMPLES
        extra = _CHUNK.pack(b"fact", 4) + _U32.pack(samples)
    fmt_part = _CHUNK.pack(b"fmt ", len(fmt_chunk)) + fmt_chunk
    body = b"WAVE" + fmt_part + extra + _CHUNK.pack(b"data", data_size)
    return b"RIFF" + _U32.pack(len(body) + data_size) + body


def _find_data(head: bytes) -> tuple[int, int] | None:
    """(offset of the first audio byte, declared data size), walking the chunks."""
    if len(head) < _RIFF_START or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = _RIFF_START
    while pos + _CHUNK.size <= len(head):
        chunk_id, size = _CHUNK.unpack_from(head, pos)
        if chunk_id == b"data":
            return pos + _CHUNK.size, size
        pos += _CHUNK.size + size + (size & 1)  # RIFF pads chunks to even length
    return None


def _fact_samples_offset(head: bytes, data_offset: int) -> int | None:
    """Where a wav49 header keeps its sample count, or None for other formats."""
    pos = _RIFF_START
    is_gsm = False
    fact: int | None = None
    while pos + _CHUNK.size <= data_offset - _CHUNK.size:
        chunk_id, size = _CHUNK.unpack_from(head, pos)
        if chunk_id == b"fmt " and size >= 2:
            is_gsm = struct.unpack_from("<H", head, pos + _CHUNK.size)[0] == _WAV49
        elif chunk_id == b"fact" and size >= 4:
            fact = pos + _CHUNK.size
        pos += _CHUNK.size + size + (size & 1)
    return fact if is_gsm else None
