"""One CDR source for the agents of several destinations, so a recording's call is asked
for once, not once per destination: one connection (one CSV index), asked under a lock
(PyMySQL and sqlite3 connections are not for several threads at once)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent.cdr import CdrQuery, CdrSource
from agent.model import CallInfo

FOUND_KEPT = 8192  # calls remembered once found: minutes of a busy PBX's recordings
# How long another destination takes "not there yet" for an answer instead of asking
# itself: below CDR_MAX_POLL, so a destination whose agent stopped asking (paused, say)
# holds up no other for longer than this.
MISS_FRESH_SECONDS = 1.0


@dataclass(frozen=True)
class _Miss:
    at: float
    asker: Asker


class SharedCdr:
    """The source behind every destination's `asker()`: an answer found is kept (a CDR row
    is written once); "not there yet" is lent to the other askers for a second, while the
    one that asked keeps polling on its own schedule and its find reaches them all."""

    def __init__(self, source: CdrSource, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.clock = clock
        self.asked = 0  # lookups that reached the source, for tests and metrics
        self._lock = threading.Lock()
        self._found: OrderedDict[CdrQuery, CallInfo] = OrderedDict()
        self._misses: dict[CdrQuery, _Miss] = {}
        self._askers = 0  # open handles

    def asker(self) -> CdrSource:
        """The source as one destination's agent sees it; the last one closed closes it."""
        with self._lock:
            self._askers += 1
            return Asker(self)

    def lookup(self, query: CdrQuery, *, asker: Asker) -> CallInfo | None:
        with self._lock:
            if (found := self._found.get(query)) is not None:
                self._found.move_to_end(query)
                return found
            miss = self._misses.get(query)
            now = self.clock()
            if miss is not None and miss.asker is not asker and now - miss.at < MISS_FRESH_SECONDS:
                return None
            self.asked += 1
            info = self.source.lookup(query)  # raises TransientError: nothing kept
            if info is None:
                self._forget_stale_misses(now)
                self._misses[query] = _Miss(now, asker)
                return None
            self._misses.pop(query, None)
            self._found[query] = info
            if len(self._found) > FOUND_KEPT:
                self._found.popitem(last=False)
            return info

    def _forget_stale_misses(self, now: float) -> None:
        if len(self._misses) > FOUND_KEPT:
            self._misses = {
                q: m for q, m in self._misses.items() if now - m.at < MISS_FRESH_SECONDS
            }

    def check(self) -> str:
        with self._lock:
            return self.source.check()

    def advice(self) -> list[str]:
        return self.source.advice()

    def released(self) -> None:
        with self._lock:
            self._askers -= 1
            if self._askers == 0:
                self.source.close()


class Asker:
    """One agent's handle on the shared source (a CdrSource)."""

    def __init__(self, shared: SharedCdr) -> None:
        self.shared = shared
        self.name = shared.source.name
        self.closed = False

    def lookup(self, query: CdrQuery) -> CallInfo | None:
        return self.shared.lookup(query, asker=self)

    def check(self) -> str:
        return self.shared.check()

    def advice(self) -> list[str]:
        return self.shared.advice()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.shared.released()
