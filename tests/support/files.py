"""What the fault tests compare: a file's sha256, and a folder's files with their identity."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Relative path -> (sha256, mtime_ns, inode) of every file below `folder`: equal
    snapshots mean nothing was modified, renamed, replaced or deleted."""
    return {
        p.relative_to(folder).as_posix(): (sha(p), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in folder.rglob("*")
        if p.is_file()
    }
