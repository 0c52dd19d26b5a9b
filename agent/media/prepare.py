"""The copy that ships: staged from the spool (which is only ever read), its header repaired
if Asterisk died, converted to MP3 if asked, tagged; the original is never touched.

A plain PCM WAV (what MixMonitor writes) is composed in one pass: its header with the RIFF
size grown, the audio, then the tag chunk made in memory, hashed as it is written. Other
files are copied, then tagged by mutagen in place, then hashed: three passes."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.config import TranscodeConfig
from agent.errors import PermanentError, TransientError
from agent.log import kv
from agent.media.length import audio_seconds, wav_seconds
from agent.media.tags import can_hold_tags, wav_tag_chunk, write_tags
from agent.media.transcode import to_mp3
from agent.model import Identity, identity_of
from agent.spool.settle import open_recording
from agent.spool.wavheader import is_complete, read_layout, repaired

log = logging.getLogger(__name__)

CHUNK = 1 << 20
HEADER_BYTES = 4096
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class ChangedWhileCopying(Exception):
    """The spool file changed during the staging copy: it is still being written."""


@dataclass(frozen=True)
class Prepared:
    path: Path  # in staging; the caller removes it
    source: Identity  # the spool file as it was copied
    format: str  # the shipped file's extension
    sha256: str
    size: int
    needs_sidecar: bool  # tags wanted, but this format cannot hold them
    seconds: float | None = None  # how long the shipped copy plays (None: unknown)


def stage(src: Path, target: Path, *, repair_header: bool) -> Identity:
    """Copy `src` to `target`; raise ChangedWhileCopying if it changed meanwhile."""
    with open_recording(src) as fin:
        before = identity_of(os.fstat(fin.fileno()))
        with target.open("wb") as fout:
            first = True
            while chunk := fin.read(HEADER_BYTES if first else CHUNK):
                if first and repair_header:  # only the staged copy is repaired
                    header = repaired(chunk, before.size)
                    chunk = header + chunk[len(header) :]
                first = False
                fout.write(chunk)
            size = fout.tell()
        after = identity_of(os.fstat(fin.fileno()))
    if after != before or size != before.size:
        target.unlink(missing_ok=True)
        raise ChangedWhileCopying(str(src))
    return before


def _digest(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How every shipped copy is made: the few settings `prepare` reads."""

    staging: Path
    tags: bool
    transcode: TranscodeConfig


def prepare(
    recipe: Recipe, *, src: Path, key: str, fields: Mapping[str, object], repair_header: bool
) -> Prepared:
    """Stage, convert and tag the copy of `src` to ship; `key` names it in staging.
    Raises ChangedWhileCopying, FileNotFoundError (the spool file vanished), and OSError
    or TransientError (our own disk; a full one says so). A failure leaves nothing of
    `key` in staging: a half-written copy would hold the space the next one needs."""
    staging = recipe.staging
    try:
        return _prepare(recipe, src, key, fields, repair_header)
    except BaseException as exc:
        for leftover in staging.glob(f"{key}.*"):
            leftover.unlink(missing_ok=True)
        if _disk_full(exc):
            raise TransientError(f"local disk full while staging: {staging}") from exc
        raise


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT anywhere in `exc`'s chain (tags and transcode wrap the OSError)."""
    todo, seen = [exc], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            return True
        linked = (current.__cause__, current.__context__, *current.args)
        todo += [e for e in linked if isinstance(e, BaseException)]
    return False


def _prepare(
    recipe: Recipe, src: Path, key: str, fields: Mapping[str, object], repair_header: bool
) -> Prepared:
    composed = _compose_wav(recipe, src, key, fields, repair_header)
    if composed is not None:
        return composed
    path, source, fmt = _copy(recipe, src, key, repair_header)
    needs_sidecar = recipe.tags and not can_hold_tags(fmt)
    if recipe.tags and not needs_sidecar:
        try:
            write_tags(path, fmt, fields)
        except PermanentError as exc:  # the copy may be damaged: make it again, untagged
            log.warning(kv("tags-failed", file=src.name, error=str(exc)))
            path.unlink()
            path, source, fmt = _copy(recipe, src, key, repair_header)
            needs_sidecar = True
    sha256, size = _digest(path)
    seconds = audio_seconds(path, fmt)
    return Prepared(path, source, fmt, sha256, size, needs_sidecar, seconds)


def _compose_wav(
    recipe: Recipe, src: Path, key: str, fields: Mapping[str, object], repair_header: bool
) -> Prepared | None:
    """The tagged copy of a plain PCM WAV in one pass, or None when `src` is not one (the
    slower path then copies and lets mutagen tag)."""
    if not (recipe.tags and src.name.endswith(".wav") and recipe.transcode.format == "none"):
        return None
    staging = recipe.staging
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / f"{key}.wav"
    with open_recording(src) as fin:
        before = identity_of(os.fstat(fin.fileno()))
        head = _plain_wav_head(fin.read(HEADER_BYTES), before.size, repair_header)
        if head is None:
            return None
        chunk = wav_tag_chunk(fields)
        digest = hashlib.sha256()
        with path.open("wb") as fout:
            block = head[:4] + (before.size - 8 + len(chunk)).to_bytes(4, "little") + head[8:]
            while block:
                fout.write(block)
                digest.update(block)
                block = fin.read(CHUNK)
            fout.write(chunk)
            digest.update(chunk)
            size = fout.tell()
        after = identity_of(os.fstat(fin.fileno()))
    if after != before or size != before.size + len(chunk):
        path.unlink(missing_ok=True)
        raise ChangedWhileCopying(str(src))
    seconds = wav_seconds(head, before.size)  # the tag chunk comes after the audio
    return Prepared(path, before, "wav", digest.hexdigest(), size, False, seconds)


def _plain_wav_head(head: bytes, size: int, repair_header: bool) -> bytes | None:
    """`head` (repaired if asked) when it declares one RIFF/WAVE whose data chunk, of even
    size, runs to the end of the file: then the tag chunk goes right after it, as mutagen
    would put it. None for anything else (odd sizes, trailing chunks, wav49)."""
    if repair_header:
        try:
            fixed = repaired(head, size)
        except ValueError:
            return None
        head = fixed + head[len(fixed) :]
    layout = read_layout(head)
    if layout is None or not is_complete(layout, size) or layout.data_size % 2:
        return None
    if b"id3 " in head[12 : layout.data_offset].lower():
        return None  # a tag chunk already: mutagen replaces it where it is
    return head


def _copy(recipe: Recipe, src: Path, key: str, repair_header: bool) -> tuple[Path, Identity, str]:
    """The staged copy, converted to MP3 when asked and possible: (path, source, format)."""
    staging = recipe.staging
    staging.mkdir(parents=True, exist_ok=True)
    fmt = src.name.rsplit(".", 1)[-1]
    path = staging / f"{key}.{fmt}"
    source = stage(src, path, repair_header=repair_header)
    if recipe.transcode.format == "mp3" and fmt.lower() != "mp3":
        mp3 = to_mp3(path, fmt, staging / f"{key}.mp3", bitrate_kbps=recipe.transcode.bitrate)
        if mp3 is not None:
            path.unlink()
            return mp3, source, "mp3"
    return path, source, fmt
