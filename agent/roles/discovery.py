"""Which spool paths may be ready: inotify events on recent folders, and scans."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from agent.model import RecordingState
from agent.pipeline import Pipeline
from agent.spool.scan import day_folder, files_below, is_date_folder, recent_days, scan
from agent.spool.shared import Feed
from agent.spool.watcher import SpoolWatcher

RECONCILE_DAYS = 1  # the periodic scan covers today and yesterday (and tomorrow)
_UNCHANGED_UNLESS_REOPENED = {RecordingState.DONE.value, RecordingState.SKIPPED.value}


class Discovery:
    """Hands every path that may be new, finished or changed to the pipeline. Watches the
    spool root and the recent date folders only (inotify watches are scarce); a scan
    catches what the events missed."""

    def __init__(
        self,
        *,
        spool: Path,
        pipeline: Pipeline,
        wake: Callable[[], None],
        watch: bool,
        feed: Callable[[Callable[[], None]], Feed] | None = None,
    ) -> None:
        self.spool = spool
        self.pipeline = pipeline
        # `feed`: a shared watcher's (several destinations), else a watcher of its own.
        self.watcher: SpoolWatcher | Feed | None = None
        if watch:
            self.watcher = SpoolWatcher(spool, wake) if feed is None else feed(wake)
        self._watched_day: date | None = None

    def start(self, now: float) -> None:
        if self.watcher is not None:
            self._refresh_watches(now)
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def take_events(self, now: float) -> None:
        """Observe what inotify reported since the last pass; follow the calendar."""
        if self.watcher is None:
            return
        files, folders = self.watcher.drain()
        new_day = date.fromtimestamp(now) != self._watched_day
        if new_day or any(is_date_folder(f) for f in folders):
            self._refresh_watches(now)
            # Files written before the new folder's watch existed are only seen by a scan.
            for folder in folders:
                if is_date_folder(folder):
                    files += list(files_below(self.spool, folder))
        for rel in files:
            self.pipeline.observe(rel, now)

    def reconcile(self, now: float, days: int = RECONCILE_DAYS) -> int:
        """Observe every unknown or changed file of recent days; returns how many."""
        paths = list(scan(self.spool, date.fromtimestamp(now), days))
        known = self.pipeline.store.identities(paths)
        count = 0
        for rel in paths:
            state_identity = known.get(rel)
            if state_identity is not None:
                state, identity = state_identity
                if state not in _UNCHANGED_UNLESS_REOPENED:
                    continue  # active rows are revisited at their due time anyway
                try:
                    if self.pipeline.identity_on_disk(rel) == identity:
                        continue
                except FileNotFoundError:
                    continue
            self.pipeline.observe(rel, now)
            count += 1
        return count

    def _refresh_watches(self, now: float) -> None:
        assert self.watcher is not None
        today = date.fromtimestamp(now)
        folders = {"", today.strftime("%Y"), today.strftime("%Y/%m")}
        folders |= {day_folder(day) for day in recent_days(today, RECONCILE_DAYS)}
        self.watcher.watch_only(folders)
        self._watched_day = today
