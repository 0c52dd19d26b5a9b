"""One recording's way from the spool to the destination, a step per state."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from agent import spoolnames
from agent.backfill import BACKFILL_REASON, SINCE_REASON
from agent.backoff import backoff
from agent.cdr import CdrQuery, CdrSource, recordingfile_variants
from agent.config import Config
from agent.errors import (
    AgentError,
    DestinationDown,
    Interrupted,
    PermanentError,
    TransientError,
    UnparseableName,
)
from agent.log import kv
from agent.media.once import PreparedOnce
from agent.media.prepare import ChangedWhileCopying, Prepared, Recipe, prepare
from agent.media.tags import can_hold_tags, sidecar
from agent.model import CallInfo, Identity, Recording, RecordingState, identity_of
from agent.publish.manifest import call_fields, day_of, entry
from agent.shipnames import NameTemplate
from agent.spool.settle import NotARegularFile, Verdict, settle
from agent.store.state import Row, Store
from agent.testhooks import crash_point
from agent.transport import Transport

log = logging.getLogger(__name__)

CHUNK = 1 << 20
HEADER_BYTES = 4096
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600
# Our own disk (staging) is cheap to try again, and an admin who frees space expects
# shipping to resume within minutes, not after an hour's backoff.
LOCAL_RETRY_MAX_SECONDS = 300
NOT_REGULAR = "not a regular file (symlink, FIFO ...)"
# The file and the CDR row come from two threads at hangup, most often milliseconds apart.
CDR_FIRST_POLL = 0.05
CDR_MAX_POLL = 5.0
# Manifest fields an object store keeps with the object (x-amz-meta-*).
OBJECT_METADATA = ("uniqueid", "caller_number", "caller_name", "dst", "started_at", "sha256")
# States whose file may still change what we ship: a changed file is looked at again.
_REOPEN_WHEN_CHANGED = {RecordingState.DONE.value, RecordingState.SKIPPED.value}


def retry_delay(attempts: int) -> float:
    """Backoff for a failed upload: 30 s, 60 s, ... capped at an hour, plus up to a fifth
    more at random so a returning server is not hit by everything at once."""
    return backoff(attempts, first=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS, jitter=0.2)


@dataclass(frozen=True)
class Stage:
    """A recording ready to be copied for shipping: what the copy needs to know."""

    row: Row
    recording: Recording
    fields: dict[str, object]  # the manifest fields so far, for tags and the name
    repair_header: bool


@dataclass(frozen=True)
class Upload:
    """A claimed recording whose prepared copy is ready to go."""

    row: Row
    prepared: Prepared
    remote: str
    sidecar: bytes | None  # the manifest entry, for formats that cannot hold tags
    metadata: dict[str, str]  # what an object store keeps with the object


@dataclass
class Pipeline:
    """Moves one row at a time; every decision is written to the store before acting on it."""

    config: Config
    store: Store
    transport: Transport
    should_stop: Callable[[], bool]
    backfill_cutoff: float  # files older than this (mtime) wait for `recsync backfill`
    cdr: CdrSource | None = None
    cdr_wait: float = 0.0
    cdr_error: str | None = None  # the last lookup's error, None after a good answer
    notify: bool = False  # a webhook is configured: done and late-CDR transitions enqueue
    on_cdr_wait: Callable[..., None] = lambda seconds, *, found: None  # how long it waited
    # A transfer that failed midway: its folder may hold the temporary it could not remove
    # (the server went away with the connection), to be swept once the server answers.
    on_upload_fault: Callable[[str, float], None] = lambda folder, now: None
    # With several destinations: what another one prepared alike is linked, not made again.
    copies: PreparedOnce | None = None

    def __post_init__(self) -> None:
        self.naming = NameTemplate(self.config.naming.template)
        self.recipe = self.recipe_of(self.config)

    @staticmethod
    def recipe_of(config: Config) -> Recipe:
        """How this (destination's) config makes its copies."""
        return Recipe(
            staging=config.state.staging, tags=config.tags.enabled, transcode=config.transcode
        )

    @property
    def spool(self) -> Path:
        return self.config.spool.path

    # --- discover ----------------------------------------------------------------------

    def stem_of(self, rel: str) -> str | None:
        """The recording key of a spool path, or None for files that are not recordings."""
        name = rel.rsplit("/", 1)[-1]
        stem, dot, ext = rel.rpartition(".")
        if not dot or name.startswith(".") or ext not in self.config.spool.extensions:
            return None
        return stem

    def identity_on_disk(self, rel: str) -> Identity:
        return identity_of(os.lstat(self.spool / rel))

    def observe(self, rel: str, now: float) -> None:
        """A spool path may be new, changed, finished or gone: bring its row up to date."""
        stem = self.stem_of(rel)
        if stem is None:
            return
        row = self.store.by_stem(stem)
        try:
            st = os.lstat(self.spool / rel)
        except FileNotFoundError:
            if row is not None and row.path == rel:
                self._vanished(row, now)
            return
        identity = identity_of(st)
        if row is None:
            self._add(stem, rel, st, now)
        elif row.path != rel:
            if not (self.spool / row.path).exists():
                self.store.replace_file(row.id, path=rel, identity=identity, now=now)
                log.info(kv("replaced", id=row.id, old=row.path, new=rel))
        elif row.state == RecordingState.PENDING.value:
            self.store.wake(row.id, now)
        elif row.spool_removed_at is not None and _same_recording(identity, row.identity):
            # Retention's original copied back (from move_to, `cp -p`) to play it in FreePBX:
            # the same recording in a new inode, not a new version to ship.
            self.store.spool_restored(row.id, identity=identity, now=now)
            log.info(kv("restored", id=row.id, path=rel))
        elif row.state in _REOPEN_WHEN_CHANGED and identity != row.identity:
            self.store.reopen(
                row.id,
                path=rel,
                identity=identity,
                now=now,
                why="file changed since it was last handled",
            )
            log.info(kv("changed", id=row.id, path=rel))

    def _add(self, stem: str, rel: str, st: os.stat_result, now: float) -> None:
        state, reason = RecordingState.PENDING, None
        if not stat.S_ISREG(st.st_mode):
            state, reason = RecordingState.QUARANTINED, NOT_REGULAR
        elif st.st_mtime < self.backfill_cutoff:
            state, reason = RecordingState.SKIPPED, BACKFILL_REASON
        elif self._before_since(rel, st):
            state, reason = RecordingState.SKIPPED, SINCE_REASON
        rid = self.store.add(
            stem=stem, path=rel, identity=identity_of(st), now=now, state=state, reason=reason
        )
        log.debug(kv("seen", id=rid, path=rel, state=state.value, reason=reason))

    def _before_since(self, rel: str, st: os.stat_result) -> bool:
        """Whether the call started before `destination.since` (by its name's date; a
        name that does not parse, by the file's date)."""
        since = self.config.destination.since
        if since is None:
            return False
        try:
            started = spoolnames.parse(
                rel.rsplit("/", 1)[-1],
                extensions=self.config.spool.extensions,
                patterns=self.config.spool.patterns,
            ).started_at.date()
        except UnparseableName:
            started = datetime.fromtimestamp(st.st_mtime).date()
        return started < since

    def _vanished(self, row: Row, now: float) -> None:
        if row.state in (
            RecordingState.DONE.value,
            RecordingState.SKIPPED.value,
            RecordingState.QUARANTINED.value,
            RecordingState.EXPIRED.value,
        ):
            return  # shipped (or never to ship): the spool is FreePBX's to clean
        for ext in self.config.spool.extensions:  # replaced by another format?
            sibling = f"{row.stem}.{ext}"
            if sibling != row.path and (self.spool / sibling).exists():
                self.observe(sibling, now)
                return
        self.store.quarantine(row.id, reason="vanished before it was shipped", now=now)
        log.warning(kv("vanished", id=row.id, path=row.path))

    # --- process -----------------------------------------------------------------------

    def process(self, row: Row, now: float, open_paths: Container[str] | None) -> Stage | None:
        """Take a due row as far as the main thread takes it: settled, parsed, its CDR
        asked. Returns the Stage to run next (`stage` in a worker, `claim`, `upload` in a
        worker, `finish`), or None when the row stopped here (the store says why)."""
        path = self.spool / row.path
        if spoolnames.is_leg_file(path.name):
            self.store.skip(row.id, reason="Monitor leg file (a later mix replaces it)", now=now)
            return None
        try:
            verdict = settle(
                path,
                now=now,
                settle_seconds=self.config.spool.settle_seconds,
                stale_seconds=self.config.spool.stale_seconds,
                open_paths=open_paths,
            )
        except FileNotFoundError:
            self._vanished(row, now)
            return None
        except OSError as exc:
            self.store.quarantine(row.id, reason=_unreadable(exc), now=now)
            return None
        if verdict.verdict is Verdict.WAIT:
            until = verdict.recheck_at if verdict.recheck_at is not None else now
            self.store.defer(row.id, until=until, reason=verdict.reason, now=now)
            return None
        if verdict.verdict is Verdict.NO_AUDIO:
            self.store.skip(row.id, reason=verdict.reason, now=now)
            return None
        recording = self._parse(row, now)
        if recording is None or not self._enrich(row, recording, now):
            return None
        return self._to_stage(row, recording, repair_header=verdict.repair_header)

    def _parse(self, row: Row, now: float) -> Recording | None:
        try:
            recording = spoolnames.parse(
                row.path.rsplit("/", 1)[-1],
                extensions=self.config.spool.extensions,
                patterns=self.config.spool.patterns,
            )
        except UnparseableName as exc:
            self.store.quarantine(row.id, reason=str(exc), now=now)
            log.warning(kv("quarantined", id=row.id, path=row.path, reason=str(exc)))
            return None
        if row.kind is None:
            self.store.set_parsed(row.id, recording, now)
        return recording

    def lookup(self, query: CdrQuery) -> CallInfo | None:
        """Ask the CDR; a store that cannot answer now counts as "not there yet"."""
        if self.cdr is None:
            return None
        try:
            info = self.cdr.lookup(query)
        except AgentError as exc:
            if str(exc) != self.cdr_error:
                log.warning(kv("cdr-error", error=str(exc)))
            self.cdr_error = str(exc)
            return None
        self.cdr_error = None
        return info

    def _enrich(self, row: Row, recording: Recording, now: float) -> bool:
        """Wait (bounded, without blocking other recordings) for the CDR row; True when
        the recording may ship, with or without it."""
        if self.cdr is None or row.cdr is not None:
            return True
        info = self.lookup(CdrQuery.for_recording(row.path.rsplit("/", 1)[-1], recording))
        deadline = row.cdr_deadline if row.cdr_deadline is not None else now + self.cdr_wait
        if info is None and now < deadline:
            polls = row.attempts if row.state == RecordingState.WAITING_CDR.value else 0
            # Soon at first (the row usually follows the file within a second), then calmer.
            delay = backoff(polls, first=CDR_FIRST_POLL, cap=CDR_MAX_POLL)
            self.store.wait_cdr(
                row.id,
                deadline=deadline,
                until=min(deadline, now + delay),
                polls=polls + 1,
                now=now,
            )
            return False
        self.store.set_cdr(row.id, info, now)
        self.on_cdr_wait(max(0.0, now - (deadline - self.cdr_wait)), found=info is not None)
        if info is None:
            log.info(kv("cdr-missing", id=row.id, path=row.path, waited=self.cdr_wait))
        return True

    def fill_late_cdr(self, now: float, *, within: float, limit: int = 500) -> int:
        """Shipped without a CDR row: ask again, and fill the manifest in if it came."""
        rows = self.store.rows(
            "state = ? AND cdr = 'missing' AND uploaded_at >= ?",
            [RecordingState.DONE.value, now - within],
            order="uploaded_at DESC",
            limit=limit,
        )
        filled = 0
        for row in rows:
            if row.remote_path is None or row.started_at is None:
                continue
            info = self.lookup(query_for_row(row))
            if info is not None:
                self.store.fill_cdr(
                    row.id, info, day=day_of(row.remote_path), now=now, notify=self.notify
                )
                if self.config.tags.enabled and not can_hold_tags(row.remote_path.rsplit(".")[-1]):
                    self._write_sidecar(row.id)  # the shipped file itself is never rewritten
                log.info(kv("cdr-filled", id=row.id, path=row.path))
                filled += 1
        return filled

    def _to_stage(self, row: Row, recording: Recording, *, repair_header: bool) -> Stage:
        fresh = self.store.get(row.id)  # with what the CDR step added
        assert fresh is not None
        return Stage(fresh, recording, call_fields(fresh), repair_header)

    def stage(self, job: Stage) -> Prepared:
        """Make the copy to ship (copy, convert, tag, hash), safe in a worker thread: no
        database access here. Raises what `prepare` raises, for `claim` to record."""
        make = prepare if self.copies is None else self.copies.prepare
        prepared = make(
            self.recipe,
            src=self.spool / job.row.path,
            key=str(job.row.id),
            fields=job.fields,
            repair_header=job.repair_header,
        )
        crash_point("staged")
        return prepared

    def claim(
        self, job: Stage, prepared: Prepared | None, error: BaseException | None, now: float
    ) -> Upload | None:
        """Name the prepared copy once and claim the row for its upload (main thread);
        None when staging failed, with the outcome recorded."""
        row = job.row
        if isinstance(error, FileNotFoundError):
            self._vanished(row, now)
            return None
        if isinstance(error, ChangedWhileCopying):
            self.store.wake(row.id, now)  # still being written: settle it again
            return None
        if isinstance(error, NotARegularFile) or getattr(error, "errno", None) == errno.ELOOP:
            self.store.quarantine(row.id, reason=NOT_REGULAR, now=now)  # swapped meanwhile
            return None
        if isinstance(error, TransientError):
            # Our own disk (staging) is full or unwritable: retry later, the spool is untouched.
            # Says what, e.g. "local disk full while staging".
            self._fail(row, str(error), now, local=True)
            return None
        if isinstance(error, OSError):
            self._fail(row, f"staging: {error.strerror or error}", now, local=True)
            return None
        if error is not None:
            raise error
        assert prepared is not None
        candidates = self._names(row, job.recording, prepared, job.fields, now)
        if candidates is None:
            prepared.path.unlink(missing_ok=True)
            return None
        remote = self.store.claim(
            row.id,
            identity=prepared.source,
            sha256=prepared.sha256,
            size=prepared.size,
            now=now,
            candidates=candidates,
            audio_seconds=prepared.seconds,
        )
        crash_point("claimed")
        assert remote is not None
        claimed = replace(
            row,
            remote_path=remote,
            sha256=prepared.sha256,
            shipped_size=prepared.size,
            audio_seconds=prepared.seconds,
            state=RecordingState.UPLOADING.value,
        )
        shipped = entry(claimed)
        return Upload(
            row=claimed,
            prepared=prepared,
            remote=remote,
            sidecar=sidecar(shipped) if prepared.needs_sidecar else None,
            metadata={k: str(shipped[k]) for k in OBJECT_METADATA if shipped.get(k) is not None},
        )

    def _names(
        self,
        row: Row,
        recording: Recording,
        prepared: Prepared,
        fields: dict[str, object],
        now: float,
    ) -> Iterator[str] | None:
        """The remote path from the template, then -2, -3 ... should it be taken; None
        (and quarantined) when the template cannot name this recording."""
        values = fields | {
            "format": prepared.format.lower(),
            "size": prepared.size,
            "sha256": prepared.sha256,
        }
        folder = recording.started_at.strftime("%Y/%m/%d")
        try:
            first = self.naming.render(values, extension=prepared.format)
        except ValueError as exc:
            self.store.quarantine(row.id, reason=f"cannot name the shipped file: {exc}", now=now)
            return None
        numbered = (
            self.naming.render(values, extension=prepared.format, suffix=n)
            for n in range(2, 10_000)
        )
        return (f"{folder}/{name}" for name in itertools.chain([first], numbered))

    def upload(self, job: Upload) -> None:
        """The network part, safe to run in a worker thread: no database access here."""
        self.transport.put(
            job.prepared.path,
            job.remote,
            sha256=job.prepared.sha256,
            should_stop=self.should_stop,
            metadata=job.metadata,
        )
        if job.sidecar is not None:
            self.transport.write_bytes(sidecar_of(job.remote), job.sidecar)
        crash_point("uploaded")

    def finish(
        self, job: Upload, error: BaseException | None, now: float, *, reraise: bool = True
    ) -> None:
        """Record how an upload ended (main thread). Re-raises DestinationDown and
        Interrupted after handing the row back, for the caller to pause or stop."""
        row = job.row
        job.prepared.path.unlink(missing_ok=True)
        if isinstance(error, Interrupted | DestinationDown):
            if isinstance(error, DestinationDown):
                self.on_upload_fault(day_of(job.remote), now)
            self.store.release(row.id, why=str(error), now=now)
            if reraise:
                raise error
            return
        if isinstance(error, TransientError):
            self.on_upload_fault(day_of(job.remote), now)
            self._fail(row, str(error), now, at_least=error.retry_after or 0.0)
            return
        if isinstance(error, PermanentError):
            self.store.quarantine(row.id, reason=str(error), now=now)
            return
        if error is not None:
            raise error
        self.store.mark_done(row.id, day=day_of(job.remote), now=now, notify=self.notify)
        crash_point("done")
        log.info(kv("shipped", id=row.id, path=row.path, remote=job.remote, size=job.prepared.size))
        if row.obsolete_remote and row.obsolete_remote != job.remote:
            self.transport.remove(row.obsolete_remote)
            self.transport.remove(sidecar_of(row.obsolete_remote))
            self.store.clear_obsolete(row.id, now)

    def _write_sidecar(self, rid: int) -> None:
        """The manifest entry beside a file that cannot hold tags (gsm, u-law ...)."""
        row = self.store.get(rid)
        assert row is not None and row.remote_path is not None
        fields = entry(row, site=self.config.destination.site)  # as the day's manifest
        self.transport.write_bytes(sidecar_of(row.remote_path), sidecar(fields))

    def _fail(
        self, row: Row, error: str, now: float, *, local: bool = False, at_least: float = 0.0
    ) -> None:
        delay = max(retry_delay(row.attempts), at_least)  # at_least: the server's Retry-After
        retry_at = now + (min(delay, LOCAL_RETRY_MAX_SECONDS) if local else delay)
        self.store.mark_failed(row.id, error=error, retry_at=retry_at, now=now, local=local)
        log.warning(kv("failed", id=row.id, path=row.path, error=error, attempts=row.attempts + 1))


def _same_recording(found: Identity, shipped: Identity) -> bool:
    return (found.size, found.mtime_ns) == (shipped.size, shipped.mtime_ns)


def _unreadable(exc: OSError) -> str:
    # O_NOFOLLOW refuses a symlink with ELOOP; NotARegularFile covers FIFOs and the like.
    if isinstance(exc, NotARegularFile) or exc.errno == errno.ELOOP:
        return NOT_REGULAR
    return f"unreadable: {exc.strerror}"


def sidecar_of(remote: str) -> str:
    return f"{remote}.json"


def query_for_row(row: Row) -> CdrQuery:
    assert row.started_at is not None
    return CdrQuery(
        recordingfiles=recordingfile_variants(row.path.rsplit("/", 1)[-1], row.pattern or ""),
        uniqueid=row.uniqueid,
        started_at=datetime.fromisoformat(row.started_at),
        src=row.src,
        dst=row.dst,
    )
