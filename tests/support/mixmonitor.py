"""A writer that behaves like Asterisk's MixMonitor, for tests and fault injection.

It opens the final path directly, writes the header with sizes 0 before any audio, hands
audio to the disk in 32 KiB bursts, and only patches the sizes on close (freepbx-facts.md
§3). `reopen` is pause/resume or stop/restart: the same file, sizes back to 0;
`crash` is Asterisk dying mid-call.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from types import TracebackType
from typing import Literal

from agent.spool.wavheader import read_layout, wav_header

BURST = 32 * 1024
# Bytes per second Asterisk writes for each format; headerless ones are raw frames.
BYTES_PER_SECOND = {
    "wav": 16000,
    "WAV": 1625,
    "gsm": 1650,
    "ulaw": 8000,
    "alaw": 8000,
    "sln": 16000,
    "g729": 1000,
    "mp3": 4000,
}


def zero_size_header(fmt: Literal["wav", "WAV"]) -> bytes:
    """The header as MixMonitor leaves it while recording: every size field 0."""
    header = bytearray(wav_header(fmt, 0))
    layout = read_layout(bytes(header))
    assert layout is not None
    header[4:8] = bytes(4)
    header[layout.data_offset - 4 : layout.data_offset] = bytes(4)
    if fmt == "WAV":
        header[48:52] = bytes(4)  # wav49 'fact' sample count
    return bytes(header)


class MixMonitorWriter:
    """One recording being written; sizes stay 0 on disk until `close`."""

    def __init__(self, path: Path, fmt: Literal["wav", "WAV"] = "wav") -> None:
        self.path = path
        self.fmt: Literal["wav", "WAV"] = fmt
        self._buffer = bytearray()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, zero_size_header(fmt))

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, data: bytes) -> None:
        """Buffer audio; whole 32 KiB bursts reach the disk at once."""
        fd = self._open_fd()
        self._buffer += data
        while len(self._buffer) >= BURST:
            os.write(fd, self._buffer[:BURST])
            del self._buffer[:BURST]

    def close(self) -> None:
        """Flush the rest, pad to even length (as Asterisk does), patch the sizes."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, self._buffer)
            self._buffer.clear()
            size = os.fstat(fd).st_size
            if size % 2:
                os.write(fd, b"\0")
                size += 1
            data_offset = len(zero_size_header(self.fmt))
            os.pwrite(fd, wav_header(self.fmt, size - data_offset), 0)
        finally:
            os.close(fd)

    def crash(self) -> None:
        """Asterisk dies: the unflushed buffer is lost and the sizes stay 0 for ever."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._buffer.clear()

    def reopen(self) -> None:
        """Pause/resume: close if open, reopen the same file to append, sizes back to 0."""
        self.close()
        fd = os.open(self.path, os.O_RDWR)
        os.pwrite(fd, zero_size_header(self.fmt), 0)
        os.lseek(fd, 0, os.SEEK_END)
        self._fd = fd

    def _open_fd(self) -> int:
        if self._fd is None:
            raise ValueError("write to a closed MixMonitorWriter")
        return self._fd

    def __enter__(self) -> MixMonitorWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def audio(n: int, seed: int = 0) -> bytes:
    """`n` bytes of deterministic pseudo-random audio."""
    return random.Random(seed).randbytes(n)


def write_recording(path: Path, *, seconds: float = 1.0, fmt: str = "wav", seed: int = 0) -> bytes:
    """Write a finished recording of `seconds` in `fmt`; return the file's bytes.

    "wav" and "WAV" go through MixMonitorWriter (wav49 audio is whole 65-byte blocks);
    other formats are raw bytes at their format's rate.
    """
    n = round(seconds * BYTES_PER_SECOND[fmt])
    if fmt == "WAV":
        n -= n % 65
    if fmt in ("wav", "WAV"):
        with MixMonitorWriter(path, "wav" if fmt == "wav" else "WAV") as w:
            w.write(audio(n, seed))
    else:
        path.write_bytes(audio(n, seed))
    return path.read_bytes()
