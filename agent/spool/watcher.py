"""inotify (watchdog) on the spool: the handler only notes "this path may be ready".

Watches are non-recursive and few: the root, this year's and month's folders (to see the
next day folder appear), and the recent day folders. Years of old folders are not watched:
inotify watches are a limited resource.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch


class _Handler(FileSystemEventHandler):
    def __init__(self, note: Callable[[str, bool], None]) -> None:
        self.note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileCreatedEvent | FileClosedEvent | FileDeletedEvent):
            self.note(str(event.src_path), False)
        elif isinstance(event, FileMovedEvent):
            self.note(str(event.src_path), False)
            self.note(str(event.dest_path), False)
        elif isinstance(event, DirCreatedEvent):
            self.note(str(event.src_path), True)


class Noted:
    """Spool-relative files and folders noted by a watcher thread, until drained."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: set[str] = set()
        self._folders: set[str] = set()

    def add(self, files: Iterable[str], folders: Iterable[str]) -> None:
        with self._lock:
            self._files.update(files)
            self._folders.update(folders)

    def drain(self) -> tuple[list[str], list[str]]:
        """(files, folders) noted since the last call."""
        with self._lock:
            files, folders = sorted(self._files), sorted(self._folders)
            self._files.clear()
            self._folders.clear()
        return files, folders


class SpoolWatcher:
    """Collects spool-relative paths from inotify; `drain()` hands them to the main loop."""

    def __init__(self, root: Path, wake: Callable[[], None]) -> None:
        self.root = root
        self._wake = wake
        self._noted = Noted()
        self._observer = Observer()
        self._handler = _Handler(self._note)
        self._watches: dict[str, ObservedWatch] = {}

    def _note(self, path: str, is_folder: bool) -> None:
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return
        self._noted.add([] if is_folder else [rel], [rel] if is_folder else [])
        self._wake()

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join()

    def watch_only(self, folders: Iterable[str]) -> None:
        """Make the watched set exactly `folders` (relative; "" is the root) that exist."""
        wanted = {f for f in folders if (self.root / f).is_dir()}
        for folder in set(self._watches) - wanted:
            self._observer.unschedule(self._watches.pop(folder))
        for folder in sorted(wanted - set(self._watches)):
            try:
                self._watches[folder] = self._observer.schedule(
                    self._handler, str(self.root / folder), recursive=False
                )
            except OSError:  # vanished meanwhile, or out of inotify watches: scans cover it
                continue

    @property
    def watched(self) -> set[str]:
        return set(self._watches)

    def drain(self) -> tuple[list[str], list[str]]:
        """(files, folders) noted since the last call."""
        return self._noted.drain()
