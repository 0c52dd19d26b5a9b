"""How long a recording plays, from the audio itself: for the calls whose CDR says nothing
(no row, or a source that has no durations), so every call on the pages shows one.

A WAV's header says it (its data size over the byte rate of its 'fmt ' chunk, PCM and
wav49 alike); an MP3's frames say it (mutagen); Asterisk's headerless formats have a fixed
byte rate. Never raises: a file it cannot read has no length (None).
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

log = logging.getLogger(__name__)

HEADER_BYTES = 4096
_CHUNK = struct.Struct("<4sI")
# Asterisk's raw formats at 8 kHz: bytes per second of audio
_RAW_RATES = {"gsm": 1650, "ulaw": 8000, "alaw": 8000, "sln": 16000, "g729": 1000}


def wav_seconds(head: bytes, file_size: int | None = None) -> float | None:
    """Seconds of audio a RIFF/WAVE header declares: the data chunk's size (capped by the
    file's, when given) over the 'fmt ' chunk's byte rate. None when `head` is not one."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + _CHUNK.size <= len(head):
        chunk_id: bytes
        size: int
        chunk_id, size = _CHUNK.unpack_from(head, pos)
        body = pos + _CHUNK.size
        if chunk_id == b"fmt " and size >= 12 and body + 12 <= len(head):
            byte_rate = int(struct.unpack_from("<I", head, body + 8)[0])
        elif chunk_id == b"data":
            if byte_rate <= 0:
                return None
            if file_size is not None:
                size = min(size, max(file_size - body, 0))
            return float(size) / byte_rate
        pos = body + size + (size & 1)  # RIFF pads chunks to even length
    return None


def audio_seconds(path: Path, fmt: str) -> float | None:
    """How long the file at `path` (of extension `fmt`) plays, in seconds, or None."""
    kind = fmt.lower()
    try:
        if kind == "wav":
            with path.open("rb") as fh:
                head = fh.read(HEADER_BYTES)
            return wav_seconds(head, path.stat().st_size)
        if kind in _RAW_RATES:
            return path.stat().st_size / _RAW_RATES[kind]
        if kind in ("mp3", "ogg", "oga", "opus", "flac"):
            import mutagen

            audio = mutagen.File(path)
            length = getattr(getattr(audio, "info", None), "length", None)
            return float(length) if isinstance(length, int | float) and length > 0 else None
    except Exception as exc:  # a length is a nicety: it never fails a shipment
        log.debug("no audio length for %s: %s", path.name, exc)
    return None
