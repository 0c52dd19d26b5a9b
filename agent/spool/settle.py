"""Is a spool file a finished recording? (freepbx-facts.md §3, DESIGN.md "Settle")

MixMonitor writes to the final path, in 32 KiB bursts, and patches the RIFF sizes on
close; pause/resume and a crash leave them at 0. Old Asterisk (and wav49 always) keeps
the sizes up to date while recording, so agreeing sizes alone do not prove the end: they
do together with the /proc check ("nobody holds it open"), and where that check is blind
(Asterisk's fds unreadable: `open_paths` is None) a quiet period must be safe on its own.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Container
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from agent.spool.wavheader import WavLayout, is_complete, read_layout

HEAD_BYTES = 4096
OPEN_RECHECK_SECONDS = 60.0
_BURST_BYTES = 32 * 1024  # MixMonitor's write buffer
# Bytes per second Asterisk writes in each format: how long one burst takes to fill.
_BYTES_PER_SECOND = {
    "wav": 16000,
    "WAV": 1625,
    "wav49": 1625,
    "gsm": 1650,
    "ulaw": 8000,
    "alaw": 8000,
    "sln": 16000,
    "g729": 1000,
}


class NotARegularFile(OSError):
    """The spool path is a symlink, FIFO, device or folder: never read as a recording."""


def open_recording(path: Path) -> BinaryIO:
    """Open a spool file for reading without ever blocking or following a link: a FIFO
    swapped in for a recording would otherwise hang a plain open() for good."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class Verdict(StrEnum):
    """What to do with a spool file now."""

    READY = "ready"
    WAIT = "wait"
    NO_AUDIO = "no_audio"


@dataclass(frozen=True)
class Settled:
    """A verdict on one file, with why and, for WAIT, when asking again is worth it."""

    verdict: Verdict
    reason: str
    recheck_at: float | None = None  # WAIT only: epoch seconds of a useful time-based recheck
    repair_header: bool = False  # READY only: the staged copy needs repaired() sizes


def quiet_seconds(path: Path, settle_seconds: float) -> float:
    """How long `path` must go unmodified before it counts as finished.

    At least `settle_seconds`, and never less than the time MixMonitor needs to fill one
    32 KiB burst in the file's format (about 20 s for gsm, 33 s for g729), so a slow
    format's gap between bursts is not mistaken for the end.
    """
    ext = path.suffix[1:]
    rate = _BYTES_PER_SECOND.get(ext) or _BYTES_PER_SECOND.get(ext.lower())
    burst = _BURST_BYTES / rate + 1.0 if rate else 0.0
    return max(settle_seconds, burst)


def settle(
    path: Path,
    *,
    now: float,
    settle_seconds: float,
    stale_seconds: float,
    open_paths: Container[str] | None,
) -> Settled:
    """Decide whether `path` is finished. Reads only; FileNotFoundError passes through.

    `open_paths`: real paths some process holds open (open_files_under), None if unknown.
    """
    with open_recording(path) as f:
        # Size and mtime from the same open file as the header, read after them: a header
        # patched in between then disagrees with the older size and we wait.
        st = os.fstat(f.fileno())
        head = f.read(HEAD_BYTES)
    if open_paths is not None and os.path.realpath(path) in open_paths:
        # The writer's close event normally comes first; this is the fallback.
        return Settled(Verdict.WAIT, "open by a process", recheck_at=now + OPEN_RECHECK_SECONDS)
    # Deadlines, not durations: a caller that rechecks at exactly recheck_at must get
    # past the same comparison, whatever float rounding does to now - mtime.
    quiet_due = st.st_mtime + quiet_seconds(path, settle_seconds)
    stale_due = st.st_mtime + stale_seconds
    quiet_for = f"{now - st.st_mtime:.0f}s"
    layout = read_layout(head)
    if layout is None:
        if now < quiet_due:
            return Settled(Verdict.WAIT, f"changed {quiet_for} ago", recheck_at=quiet_due)
        if st.st_size == 0:
            return Settled(Verdict.NO_AUDIO, "empty file")
        return Settled(Verdict.READY, f"quiet for {quiet_for}")
    if is_complete(layout, st.st_size):
        if open_paths is None and now < quiet_due:
            reason = f"header complete, changed {quiet_for} ago"
            return Settled(Verdict.WAIT, reason, recheck_at=quiet_due)
        if layout.data_size == 0:
            return Settled(Verdict.NO_AUDIO, "header only, no audio data")
        return Settled(Verdict.READY, f"header sizes match, quiet for {quiet_for}")
    if now >= stale_due:
        # Sizes never patched and nobody writing: Asterisk died mid-call.
        if st.st_size <= layout.data_offset:
            return Settled(Verdict.NO_AUDIO, f"header only, stale for {quiet_for}")
        reason = f"header sizes unset, stale for {quiet_for}"
        return Settled(Verdict.READY, reason, repair_header=True)
    return Settled(Verdict.WAIT, _incomplete_reason(layout), recheck_at=stale_due)


def _incomplete_reason(layout: WavLayout) -> str:
    if layout.riff_size == 0 and layout.data_size == 0:
        return "header sizes still 0"
    return "header sizes disagree with the file size"


WRITER_NAMES = frozenset({"asterisk"})


def open_files_under(root: Path) -> frozenset[str] | None:
    """Real paths under `root` that some process holds open for writing, from
    /proc/*/fd; None when the check is blind (an Asterisk process whose fds this user may
    not read).

    Readers do not count: a playback, a backup or a script reading a finished recording
    cannot change it, and its close sends no event that would wake the agent again.
    Other unreadable processes and fds that vanish meanwhile are skipped.
    One pass over /proc: call it per batch, not per file.
    """
    prefix = os.path.join(os.path.realpath(root), "")
    found: set[str] = set()
    try:
        pids = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return frozenset()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            if _command(pid) in WRITER_NAMES:
                return None
            continue
        except OSError:
            continue
        for fd in fds:
            # The kernel gives the resolved path; a deleted file ends in " (deleted)".
            with contextlib.suppress(OSError):
                target = os.readlink(f"{fd_dir}/{fd}")
                if target.startswith(prefix) and _may_write(pid, fd):
                    found.add(target)
    return frozenset(found)


def _may_write(pid: str, fd: str) -> bool:
    """False for an fd known to be open read-only (its fdinfo flags), or closed since it
    was listed: a reader closing (another destination's staging copy in this process, a
    playback) must not pass for a writer, or `run --once` would leave its file behind."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
            for line in fh:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    except (FileNotFoundError, ProcessLookupError):
        return False
    except (OSError, ValueError, IndexError):
        pass
    return True


def _command(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""
