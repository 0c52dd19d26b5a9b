"""Listing the spool: the flat root (FreePBX 2.3 - 2.9) and `YYYY/MM/DD` day folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path


def day_folder(day: date) -> str:
    return day.strftime("%Y/%m/%d")


def recent_days(today: date, days: int) -> list[date]:
    """Today, the `days` before it, and tomorrow (a PBX clock a little ahead of ours)."""
    return [today + timedelta(days=offset) for offset in range(1, -days - 1, -1)]


def files_in(root: Path, folder: str) -> Iterator[str]:
    """Spool-relative paths of the entries in one folder that are not folders."""
    base = root / folder if folder else root
    try:
        entries = list(os.scandir(base))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            yield f"{folder}/{entry.name}" if folder else entry.name


def scan(root: Path, today: date, days: int) -> Iterator[str]:
    """The root's own files plus those of the recent day folders."""
    yield from files_in(root, "")
    for day in recent_days(today, days):
        yield from files_in(root, day_folder(day))


def is_date_folder(rel: str) -> bool:
    """`2024`, `2024/03` or `2024/03/15`: a folder FreePBX makes for recordings."""
    parts = rel.split("/")
    widths = (4, 2, 2)
    return 0 < len(parts) <= 3 and all(
        len(part) == widths[i] and part.isdigit() for i, part in enumerate(parts)
    )
