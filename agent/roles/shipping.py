"""The recordings that are due: settled and parsed here, copied and uploaded in workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from agent.errors import DestinationDown, Interrupted
from agent.media.prepare import Prepared
from agent.pipeline import Pipeline, Stage, Upload
from agent.roles.destination import Destination
from agent.roles.health import Health
from agent.spool.settle import open_files_under

READY_AHEAD = 1  # staged copies kept waiting for an upload slot
STAGING = 2  # copies made at once (a 2 MB one costs as much as its upload)


class Shipping:
    """One pass over the due recordings at `now`. The main thread settles the next
    recordings while at most `parallel` uploads and one copy run in worker threads;
    every outcome is recorded on the main thread, the only one that touches the
    database, with the pass's `now`."""

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        destination: Destination,
        health: Health,
        parallel: int,
        should_stop: Callable[[], bool],
        open_files: Callable[[Path], frozenset[str] | None] = open_files_under,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.destination = destination
        self.health = health
        self.parallel = parallel
        self.should_stop = should_stop
        self.open_files = open_files
        self.timer = timer  # how long the pass has run, for the latency metric only
        self._began = 0.0
        # The next copies are made while the uploads run.
        self.workers = ThreadPoolExecutor(max_workers=parallel + STAGING, thread_name_prefix="ship")
        self._staging: dict[Future[Prepared], Stage] = {}
        self._uploads: dict[Future[None], Upload] = {}
        # Staged and claimed, waiting for an upload slot: when one ends, the next starts
        # at once instead of after the next copy (a 2 MB copy takes as long as a put).
        self._ready: list[Upload] = []

    def _halted(self) -> bool:
        return self.should_stop() or self.destination.paused

    def step(self, now: float, *, between_batches: Callable[[], None] = lambda: None) -> int:
        """Move every recording due at `now` as far as it goes; `between_batches` runs
        after each batch (a long backlog shows its progress). Returns how many rows."""
        self._began = self.timer()
        processed: set[int] = set()
        open_paths: Container[str] | None = None
        scanned = False
        store = self.pipeline.store
        while not self._halted():
            rows = [r for r in store.due(now) if r.id not in processed]
            if not rows:  # the due ones may all be in flight: the next outcome may add more
                if not (self._staging or self._uploads):
                    break
                self._one_outcome(now)
                continue
            if not scanned:  # one /proc scan per pass, not per file
                open_paths, scanned = self.open_files(self.pipeline.spool), True
            for row in rows:
                if self._halted():
                    break
                processed.add(row.id)
                job = self.pipeline.process(row, now, open_paths)
                if job is not None:
                    self._submit(job, now)
            # No draining between batches: the uploads in flight go on meanwhile.
            between_batches()
        self._wait_all(now)
        return len(processed)

    def close(self) -> None:
        self.workers.shutdown(wait=True)

    def _in_flight(self) -> bool:
        return bool(self._staging or self._uploads or self._ready)

    def _submit(self, job: Stage, now: float) -> None:
        self._staging[self.workers.submit(self.pipeline.stage, job)] = job
        while len(self._staging) >= STAGING or len(self._ready) >= READY_AHEAD:
            self._one_outcome(now)

    def _wait_all(self, now: float) -> None:
        while self._in_flight():
            if not (self._staging or self._uploads):  # stopped or paused with some ready
                for upload in self._ready:
                    self.pipeline.finish(upload, Interrupted("not started"), now, reraise=False)
                self._ready.clear()
                return
            self._one_outcome(now)

    def _start_uploads(self, now: float) -> None:
        while self._ready and len(self._uploads) < self.parallel:
            upload = self._ready.pop(0)
            if self._halted():
                self.pipeline.finish(upload, Interrupted("not started"), now, reraise=False)
                continue
            self._uploads[self.workers.submit(self.pipeline.upload, upload)] = upload

    def _one_outcome(self, now: float) -> None:
        futures: list[Future[Any]] = [*self._staging, *self._uploads]
        for future in wait(futures, return_when=FIRST_COMPLETED).done:
            if future in self._staging:
                self._staged(future, now)
            else:
                self._uploaded(future, now)

    def _staged(self, future: Future[Prepared], now: float) -> None:
        job = self._staging.pop(future)
        error = future.exception()
        prepared = None if error else future.result()
        upload = self.pipeline.claim(job, prepared, error, now)
        if upload is None:
            return
        self._ready.append(upload)
        self._start_uploads(now)

    def _uploaded(self, future: Future[None], now: float) -> None:
        job = self._uploads.pop(future)
        error = future.exception()
        self.health.upload_ended(
            size=job.prepared.size,
            closed_at=job.row.mtime_ns / 1e9,
            error=error,
            now=now + (self.timer() - self._began),  # when it arrived, not when the pass began
        )
        try:
            self.pipeline.finish(job, error, now)
            if error is None:
                self.destination.record("ok", now=now)
        except DestinationDown as exc:
            self.destination.pause(str(exc), now)
        except Interrupted:
            pass  # the agent is stopping; the row was handed back
        self._start_uploads(now)
