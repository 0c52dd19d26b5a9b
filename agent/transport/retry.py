"""Retry as a wrapper (restic's `retry.Backend`): any Transport, tried again within a call."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from agent.backoff import backoff
from agent.errors import Interrupted, TransientError
from agent.transport import Features, RemoteFile, Transport

T = TypeVar("T")

FIRST_DELAY = 0.5  # the first retry runs at once; then 0.5 s, 1 s, 2 s ...
MAX_ELAPSED = 5.0  # past this the error passes up: the durable per-file backoff takes over
STOP_POLL = 0.1  # how often a wait looks at should_stop


class RetryingTransport:
    """A TransientError (a reset connection, a timeout) is tried again at once, on a fresh
    session (adapters drop a broken one), then after 0.5 s, 1 s, 2 s ... for as long as
    the next try starts within `max_elapsed` of the first. DestinationDown,
    PermanentError and Interrupted pass straight through: retrying cannot help them."""

    def __init__(
        self,
        inner: Transport,
        *,
        max_elapsed: float = MAX_ELAPSED,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.max_elapsed = max_elapsed
        self.sleep = sleep
        self.clock = clock
        self.retries = 0  # how many tries were repeated, for tests and curiosity

    def __repr__(self) -> str:
        return f"RetryingTransport({self.inner!r})"

    @property
    def features(self) -> Features:
        """What the adapter learned, read by callers; its optional calls retried too."""
        features = self.inner.features
        create = features.create_bytes
        if create is None:
            return features
        # A retried create whose first try did land answers False ("already there"): the
        # caller reads the file back and finds its own (Destination's owner check does).
        return dataclasses.replace(
            features, create_bytes=lambda remote, data: self._retry(lambda: create(remote, data))
        )

    def _retry(self, call: Callable[[], T], should_stop: Callable[[], bool] = lambda: False) -> T:
        began, attempt = self.clock(), 0
        while True:
            try:
                return call()
            except TransientError as exc:
                delay = 0.0 if attempt == 0 else backoff(attempt - 1, first=FIRST_DELAY, cap=60)
                delay = max(delay, exc.retry_after or 0.0)  # the server's wish wins
                if self.clock() + delay - began > self.max_elapsed or should_stop():
                    raise
            self._wait(delay, should_stop)
            attempt += 1
            self.retries += 1

    def _wait(self, delay: float, should_stop: Callable[[], bool]) -> None:
        end = self.clock() + delay
        while (left := end - self.clock()) > 0:
            if should_stop():
                raise Interrupted("stopped while waiting to try again")
            self.sleep(min(STOP_POLL, left))

    def probe(self) -> None:
        self._retry(self.inner.probe)

    def put(
        self,
        local: Path,
        remote: str,
        *,
        sha256: str,
        should_stop: Callable[[], bool] = lambda: False,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._retry(
            lambda: self.inner.put(
                local, remote, sha256=sha256, should_stop=should_stop, metadata=metadata
            ),
            should_stop,
        )

    def write_bytes(self, remote: str, data: bytes) -> None:
        self._retry(lambda: self.inner.write_bytes(remote, data))

    def read_bytes(self, remote: str) -> bytes | None:
        return self._retry(lambda: self.inner.read_bytes(remote))

    def listdir(self, folder: str = "") -> list[str]:
        return self._retry(lambda: self.inner.listdir(folder))

    def stat_remote(self, remote: str) -> RemoteFile | None:
        return self._retry(lambda: self.inner.stat_remote(remote))

    def remove(self, remote: str) -> None:
        self._retry(lambda: self.inner.remove(remote))

    def sweep(self, folders: Iterable[str]) -> int:
        wanted = list(folders)  # an iterator would be empty on the second try
        return self._retry(lambda: self.inner.sweep(wanted))

    def close(self) -> None:
        self.inner.close()
