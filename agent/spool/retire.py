"""Taking an original out of the spool: deleted, or moved to retention.move_to with its
spool-relative path (so a YYYY/MM/DD/ layout stays one). The only place that writes in
the spool; the callers check first that the file is shipped, verified and unheld."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

from agent.durable import TEMP_PREFIX, TEMP_SUFFIX, fsync_dir
from agent.testhooks import crash_point

CHUNK = 1 << 20


class MoveFailed(OSError):
    """The copy in move_to does not match the original; the original is kept."""


def same_disk(spool: Path, move_to: Path) -> bool:
    """Whether moving into `move_to` frees nothing on the spool's file system."""
    folder = move_to
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.stat(spool).st_dev == os.stat(folder).st_dev


def retire(spool: Path, rel: str, *, move_to: Path | None) -> str:
    """Delete `spool/rel`, or move it to `move_to/rel`; returns "deleted" or "moved".
    A move is one rename on the same file system; across file systems the copy is made
    under a temporary name, fsynced, checked byte for byte against the original and
    renamed into place before the original is unlinked, so a crash at any point leaves
    the recording in the spool, in move_to, or in both, never in neither."""
    source = spool / rel
    if move_to is None:
        os.unlink(source)
        fsync_dir(source.parent)
        return "deleted"
    target = move_to / rel
    _make_folders(target.parent, move_to)
    try:
        os.rename(source, target)  # replaces a copy an interrupted move left
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_verified(source, target)
        crash_point("retention:copied")
        os.unlink(source)
    fsync_dir(target.parent)
    fsync_dir(source.parent)
    return "moved"


def _make_folders(folder: Path, top: Path) -> None:
    """`folder` and its missing parents below `top`, each owned like its parent: run as
    root (`recsync retention`), the CLI must not leave folders the service cannot write."""
    missing = []
    while not folder.exists() and folder != top and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    top.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            owner = made.parent.stat()
            os.chown(made, owner.st_uid, owner.st_gid)


def _copy_verified(source: Path, target: Path) -> None:
    # A fixed temporary name: a crash's leftover is replaced by the next try, not piled up.
    temp = target.parent / f"{TEMP_PREFIX}{target.name}{TEMP_SUFFIX}"
    try:
        with source.open("rb") as src, temp.open("wb") as dst:
            wrote = hashlib.sha256()
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                wrote.update(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, temp)  # the mtime: FreePBX and admins sort by it
        if os.geteuid() == 0:  # the original's owner (asterisk), as a rename would keep
            st = source.stat()
            os.chown(temp, st.st_uid, st.st_gid)
        if _sha256(temp) != wrote.hexdigest():
            raise MoveFailed(errno.EIO, f"the copy in {target.parent} differs from the original")
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
