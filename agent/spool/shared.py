"""One spool watcher for several agents (one per destination): one set of inotify
watches, and a feed per agent with its own noted paths and its own wake-up."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.spool.watcher import Noted, SpoolWatcher


class SharedWatcher:
    """The watches are the same for every agent (they follow the calendar), so they are
    kept once; what inotify notes is copied to every feed on the watcher's thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._feeds: list[Feed] = []
        self._running = 0
        self._watcher = SpoolWatcher(root, self._deliver)

    def feed(self, wake: Callable[[], None]) -> Feed:
        feed = Feed(self, wake)
        with self._lock:
            self._feeds.append(feed)
        return feed

    def _deliver(self) -> None:
        files, folders = self._watcher.drain()
        with self._lock:
            feeds = list(self._feeds)
        for feed in feeds:
            feed.add(files, folders)

    def _start_one(self) -> None:
        with self._lock:
            if self._running == 0:
                self._watcher.start()
            self._running += 1

    def _stop_one(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._watcher.stop()

    def watch_only(self, folders: Iterable[str]) -> None:
        with self._lock:  # each agent asks at its own new day: the same set, once
            self._watcher.watch_only(folders)

    @property
    def watched(self) -> set[str]:
        with self._lock:
            return self._watcher.watched


class Feed:
    """One agent's view of the shared watcher, with SpoolWatcher's methods."""

    def __init__(self, shared: SharedWatcher, wake: Callable[[], None]) -> None:
        self.shared = shared
        self._wake = wake
        self._noted = Noted()
        self._started = False

    def add(self, files: Iterable[str], folders: Iterable[str]) -> None:
        self._noted.add(files, folders)
        self._wake()

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.shared._start_one()

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.shared._stop_one()

    def watch_only(self, folders: Iterable[str]) -> None:
        self.shared.watch_only(folders)

    @property
    def watched(self) -> set[str]:
        return self.shared.watched

    def drain(self) -> tuple[list[str], list[str]]:
        """(files, folders) noted since the last call."""
        return self._noted.drain()
