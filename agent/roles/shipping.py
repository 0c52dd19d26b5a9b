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
    database, with the pass's `now`. A pass that does not drain leaves its transfers
    running: the next pass records their outcomes, and `wake` rings at each one."""

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
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.pipeline = pipeline
        self.destination = destination
        self.health = health
        self.parallel = parallel
        self.should_stop = should_stop
        self.open_files = open_files
        self.timer = timer  # how long the pass has run, for the latency metric only
        self.wake = wake
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

    def step(
        self,
        now: float,
        *,
        between_batches: Callable[[], None] = lambda: None,
        drain: bool = True,
    ) -> int:
        """Move every recording due at `now` as far as it goes; `between_batches` runs
        after each batch (a long backlog shows its progress). Without `drain` the pass
        ends once nothing more is due, its transfers still running: a call closed
        meanwhile waits for the next pass only, not for the slowest upload. Returns how
        many rows."""
        self._began = self.timer()
        self._outcomes_so_far(now)
        in_flight = self.busy()  # from an earlier pass: not to be taken again
        processed = set(in_flight)
        open_paths: Container[str] | None = None
        scanned = False
        store = self.pipeline.store
        while not self._halted():
            rows = [r for r in store.due(now) if r.id not in processed]
            if not rows:  # the due ones may all be in flight: the next outcome may add more
                if not drain or not (self._staging or self._uploads):
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
        if drain or self._halted():
            self._wait_all(now)
        return len(processed - in_flight)

    def busy(self) -> set[int]:
        """The rows being copied, waiting for a slot or uploaded right now."""
        jobs: list[Stage | Upload] = [*self._staging.values(), *self._ready]
        jobs += self._uploads.values()
        return {job.row.id for job in jobs}

    def drain(self, now: float) -> None:
        """Record the outcome of every transfer still running."""
        self._wait_all(now)

    def close(self) -> None:
        self.workers.shutdown(wait=True)

    def _in_flight(self) -> bool:
        return bool(self._staging or self._uploads or self._ready)

    def _submit(self, job: Stage, now: float) -> None:
        self._staging[self._run(self.pipeline.stage, job)] = job
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
            self._uploads[self._run(self.pipeline.upload, upload)] = upload

    def _run(self, work: Callable[[Any], Any], job: Any) -> Future[Any]:
        future = self.workers.submit(work, job)
        future.add_done_callback(lambda _: self.wake())
        return future

    def _outcomes_so_far(self, now: float) -> None:
        """Record the transfers that ended since the last pass, waiting for none."""
        futures: list[Future[Any]] = [*self._staging, *self._uploads]
        for future in [f for f in futures if f.done()]:
            self._record(future, now)

    def _one_outcome(self, now: float) -> None:
        futures: list[Future[Any]] = [*self._staging, *self._uploads]
        for future in wait(futures, return_when=FIRST_COMPLETED).done:
            self._record(future, now)

    def _record(self, future: Future[Any], now: float) -> None:
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
