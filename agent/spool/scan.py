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


def _subfolders(base: Path, width: int) -> list[str]:
    try:
        return sorted(
            e.name
            for e in os.scandir(base)
            if e.is_dir(follow_symlinks=False) and len(e.name) == width and e.name.isdigit()
        )
    except (FileNotFoundError, NotADirectoryError):
        return []


def day_folders(root: Path, first: date, last: date) -> Iterator[str]:
    """Existing `YYYY/MM/DD` folders from `first` to `last`, found by listing (a window of
    years costs what exists, not one lookup per day)."""
    for year in _subfolders(root, 4):
        if not first.year <= int(year) <= last.year:
            continue
        for month in _subfolders(root / year, 2):
            for day in _subfolders(root / year / month, 2):
                try:
                    found = date(int(year), int(month), int(day))
                except ValueError:
                    continue
                if first <= found <= last:
                    yield f"{year}/{month}/{day}"


def scan(root: Path, today: date, days: int) -> Iterator[str]:
    """The root's own files plus those of the day folders from `days` ago to tomorrow."""
    yield from files_in(root, "")
    first = today - timedelta(days=min(days, (today - date.min).days))
    for folder in day_folders(root, first, today + timedelta(days=1)):
        yield from files_in(root, folder)


def files_below(root: Path, folder: str) -> Iterator[str]:
    """Files in a new date folder and in the date folders inside it (a new year or month
    folder may already hold the day folder by the time its event is handled)."""
    yield from files_in(root, folder)
    depth = folder.count("/") + 1
    if depth < 3:
        for sub in _subfolders(root / folder, 2):
            yield from files_below(root, f"{folder}/{sub}")


def is_date_folder(rel: str) -> bool:
    """`2024`, `2024/03` or `2024/03/15`: a folder FreePBX makes for recordings."""
    parts = rel.split("/")
    widths = (4, 2, 2)
    return 0 < len(parts) <= 3 and all(
        len(part) == widths[i] and part.isdigit() for i, part in enumerate(parts)
    )
