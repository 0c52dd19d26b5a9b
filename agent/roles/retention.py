"""Spool retention: shipped originals leave the spool (deleted, or moved to move_to)
only after their remote copy (at every destination) is checked again in the same pass;
the free-space floor.

An original goes when it is done, unchanged since it shipped (size, mtime and inode are
the row's), not open for writing, under no hold, and old enough (spool_days since it
shipped) or, below min_free_percent with on_low_disk = "prune", the oldest first until
the floor is met. A remote copy missing or different is never a reason to delete: the
recording is shipped again and an alert raised. The destination down: nothing goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import RetentionConfig
from agent.errors import DestinationDown, PermanentError, TransientError
from agent.log import kv
from agent.model import identity_of
from agent.roles.destination import Destination
from agent.roles.expiry import Retired, expire_days
from agent.spool.retire import retire, same_disk
from agent.spool.settle import open_files_under
from agent.store.state import Row, Store
from agent.testhooks import crash_point
from agent.transport import RemoteFile, Transport

if TYPE_CHECKING:
    from agent.metrics import Metrics
    from agent.roles.health import NoMetrics

log = logging.getLogger(__name__)

PASS_SECONDS = 300  # a pass reads every old original's remote copy: not every loop turn
# Remote checks in one pass of the running agent: the first pass after retention is
# turned on may find years of originals, and shipping must not wait for all of them.
PASS_CHECKS = 200
NEXT_BATCH_SECONDS = 1.0  # a pass cut at PASS_CHECKS goes on this soon
AGE, LOW_DISK = "age", "low-disk"


@dataclass(frozen=True)
class Disk:
    total: int
    free: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.total if self.total else 100.0


def disk_of(path: Path) -> Disk:
    st = os.statvfs(path)
    # f_bavail: what the service (not root's reserve) can still write.
    return Disk(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


@dataclass
class Report:
    """What one pass did: `retired` (would be, in a dry run; not re-checked remotely
    then), `requeued` (id, why), `kept` (reason -> count), the disk, and `stopped` when
    the destination cut the pass short."""

    dry_run: bool = False
    retired: list[Retired] = field(default_factory=list)
    requeued: list[tuple[int, str]] = field(default_factory=list)
    kept: Counter[str] = field(default_factory=Counter)
    disk: Disk | None = None
    low_disk: bool = False
    stopped: str | None = None
    more: bool = False  # cut at its limit of remote checks: the next pass goes on
    expired: list[Retired] = field(default_factory=list)  # left the destination
    checked: int = 0  # remote copies checked

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.retired)


@dataclass(frozen=True)
class Recheck:
    """Why another destination's copy cannot stand for the original: `why`, and whether
    that destination was told to ship it again (`requeued`)."""

    why: str
    requeued: bool


class _Stop(Exception):
    """The destination cannot answer: end the pass, nothing more goes."""


def mismatch(row: Row, remote: RemoteFile | None) -> str | None:
    """Why the remote copy cannot stand for the original, None when it can."""
    if remote is None:
        return f"remote copy {row.remote_path} is missing"
    if remote.size != row.shipped_size:
        return f"remote copy {row.remote_path} is {remote.size} bytes, not {row.shipped_size}"
    if remote.sha256 is not None and remote.sha256 != row.sha256:
        return f"remote copy {row.remote_path} has another sha256 than was shipped"
    return None


class Retention:
    """A pass at most every PASS_SECONDS (`step`), or on demand (`apply`, the CLI)."""

    def __init__(
        self,
        *,
        config: RetentionConfig,
        spool: Path,
        store: Store,
        transport: Transport,
        destination: Destination,
        metrics: Metrics | NoMetrics,
        open_files: Callable[[Path], frozenset[str] | None] = open_files_under,
        disk: Callable[[Path], Disk] = disk_of,
        should_stop: Callable[[], bool] = lambda: False,
        checks_per_pass: int | None = PASS_CHECKS,
        elsewhere: Callable[[Row], str | None] = lambda row: None,
        recheck: Callable[[Row, float], Recheck | None] = lambda row, now: None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.store = store
        self.transport = transport
        self.destination = destination
        self.metrics = metrics
        self.open_files = open_files
        self.disk = disk
        self.should_stop = should_stop
        self.checks_per_pass = checks_per_pass  # None: no limit (the CLI's pass)
        # Why the other destinations keep an original (one of them lacks it), None: none
        # does. Asked before this destination's copy, so their backlog costs no request.
        self.elsewhere = elsewhere
        # The other destinations' copies read again, after this one's (Elsewhere.recheck).
        self.recheck = recheck
        self.next_pass_at = 0.0
        self._limit: int | None = None  # of the pass under way
        self.problem: str | None = None  # for the alerts: low disk, copies re-queued
        self.last_report: Report | None = None  # the last pass that was not a dry run

    @property
    def enabled(self) -> bool:
        config = self.config
        return config.deletes or config.min_free_percent > 0 or config.destination_days > 0

    def step(self, now: float) -> Report | None:
        """The running agent's pass, when one is due; None when not."""
        if not self.enabled or now < self.next_pass_at:
            return None
        report = self.apply(now, limit=self.checks_per_pass)
        self.next_pass_at = now + (NEXT_BATCH_SECONDS if report.more else PASS_SECONDS)
        return report

    def apply(self, now: float, *, dry_run: bool = False, limit: int | None = None) -> Report:
        """One pass at `now`, of at most `limit` remote checks (None: all). A dry run
        writes nothing and asks the destination nothing."""
        report = Report(dry_run=dry_run)
        self._limit = limit
        self._measure(report)
        if self.config.deletes:
            if self.destination.paused:
                report.stopped = f"destination paused: {self.destination.paused_reason}"
            else:
                with contextlib.suppress(_Stop):  # report.stopped says why
                    self._retire_all(report, now)
                if report.retired and not dry_run:
                    self._measure(report)  # the disk as the pass leaves it
        if self.config.destination_days > 0 and not self.destination.paused:
            try:
                report.expired = expire_days(
                    store=self.store,
                    transport=self.transport,
                    metrics=self.metrics,
                    days=self.config.destination_days,
                    dry_run=dry_run,
                    now=now,
                )
            except (DestinationDown, TransientError) as exc:
                if isinstance(exc, DestinationDown):
                    self.destination.pause(str(exc), now)
                report.stopped = str(exc)
        if not dry_run:
            self.last_report = report
            self.problem = _problem(report, self.config)
            if report.retired or report.requeued or report.stopped:
                log.info(
                    kv(
                        "retention",
                        retired=len(report.retired),
                        freed=report.freed,
                        requeued=len(report.requeued) or None,
                        stopped=report.stopped,
                    )
                )
        return report

    def _measure(self, report: Report) -> None:
        if self.config.min_free_percent <= 0 and not self.config.deletes:
            return
        report.disk = self.disk(self.spool)
        self.metrics.spool_disk(free_bytes=report.disk.free, free_percent=report.disk.free_percent)
        floor = self.config.min_free_percent
        report.low_disk = floor > 0 and report.disk.free_percent < floor

    def _retire_all(self, report: Report, now: float) -> None:
        open_paths = self.open_files(self.spool)  # one /proc scan per pass
        seen: set[int] = set()
        if self.config.spool_days > 0:
            cutoff = now - self.config.spool_days * 86400
            for row in self.store.in_spool(shipped_before=cutoff):
                seen.add(row.id)
                self._one(row, AGE, report, open_paths, now)
        if not (report.low_disk and self.config.on_low_disk == "prune"):
            return
        move_to = self.config.move_to
        if move_to is not None and same_disk(self.spool, move_to):
            report.stopped = (
                f"retention.move_to {move_to} is on the spool's disk: moving frees nothing"
            )
            return
        freed = report.freed  # a dry run frees nothing: count what it would have
        for row in self.store.in_spool(oldest="mtime_ns"):
            if not self._below_floor(report, freed):
                return
            if row.id not in seen:
                before = len(report.retired)
                self._one(row, LOW_DISK, report, open_paths, now)
                if report.dry_run and len(report.retired) > before:
                    freed += row.size

    def _below_floor(self, report: Report, freed: int) -> bool:
        disk = self.disk(self.spool)
        if report.dry_run:
            disk = Disk(disk.total, disk.free + freed)
        else:
            report.disk = disk
            self.metrics.spool_disk(free_bytes=disk.free, free_percent=disk.free_percent)
        return disk.free_percent < self.config.min_free_percent

    def _one(
        self, row: Row, rule: str, report: Report, open_paths: frozenset[str] | None, now: float
    ) -> None:
        path = self.spool / row.path
        why_kept = self._local_check(path, row, open_paths)
        if why_kept == "absent":
            if not report.dry_run:  # gone by other hands, or a pass cut after the removal
                self._absent(row, now)
            return
        if why_kept is None:
            why_kept = self.elsewhere(row)
        if why_kept is not None:
            report.kept[why_kept] += 1
            return
        if report.dry_run:
            report.retired.append(Retired(row.id, row.path, row.size, rule))
            return
        if self.should_stop() or (self._limit is not None and report.checked >= self._limit):
            report.more = True
            raise _Stop
        report.checked += 1
        assert row.remote_path is not None
        try:
            remote = self.transport.stat_remote(row.remote_path)
            if remote is None:
                # A lost mount or bucket looks like a missing file: only a destination that
                # answers its probe may say a copy is gone.
                self.transport.probe()
        except DestinationDown as exc:
            self.destination.pause(str(exc), now)
            report.stopped = str(exc)
            raise _Stop from exc
        except TransientError as exc:
            report.stopped = str(exc)
            raise _Stop from exc
        except PermanentError as exc:
            log.warning(kv("retention-unverifiable", id=row.id, error=str(exc)))
            report.kept["unverifiable"] += 1
            return
        problem = mismatch(row, remote)
        if problem is not None:
            self.store.requeue(row.id, reason=problem, now=now)
            self.metrics.error("retention-verify")
            report.requeued.append((row.id, problem))
            log.warning(kv("retention-requeued", id=row.id, path=row.path, reason=problem))
            return
        try:
            other = self.recheck(row, now)
        except (DestinationDown, TransientError) as exc:  # another's: this one is not paused
            report.stopped = str(exc)
            raise _Stop from exc
        if other is not None:
            if not other.requeued:
                report.kept[other.why] += 1
                return
            self.metrics.error("retention-verify")
            report.requeued.append((row.id, other.why))
            log.warning(kv("retention-requeued", id=row.id, path=row.path, reason=other.why))
            return
        crash_point("retention:verified")
        # Asked again just before acting: a hold added or a write made during the pass wins.
        if self.store.holds.covers(row.id):
            report.kept["held"] += 1
            return
        if (why_kept := self._local_check(path, row, None) or self.elsewhere(row)) is not None:
            report.kept[why_kept] += 1
            return
        try:
            how = retire(self.spool, row.path, move_to=self.config.move_to)
        except OSError as exc:
            log.error(kv("retention-failed", id=row.id, path=row.path, error=str(exc)))
            report.kept["cannot remove"] += 1
            return
        crash_point("retention:removed")
        where = f" to {self.config.move_to}" if how == "moved" else ""
        self.store.spool_removed(
            row.id,
            event=f"spool-{how}",
            detail=f"{rule}: {how}{where} after {row.remote_path} was checked again"
            f" ({row.shipped_size} bytes{', sha256' if remote and remote.sha256 else ''})",
            now=now,
        )
        self.metrics.retired(rule=rule, size=row.size)
        report.retired.append(Retired(row.id, row.path, row.size, rule))

    def _absent(self, row: Row, now: float) -> None:
        move_to = self.config.move_to
        if move_to is not None and (move_to / row.path).is_file():
            event, detail = "spool-moved", f"found in {move_to} (a pass was cut after the move)"
        else:
            event, detail = "spool-absent", "not in the spool any more (removed by other hands?)"
        self.store.spool_removed(row.id, event=event, detail=detail, now=now)

    def _local_check(self, path: Path, row: Row, open_paths: frozenset[str] | None) -> str | None:
        """Why the original must stay as far as this machine can tell; None: it may go."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "absent"
        if not stat.S_ISREG(st.st_mode) or identity_of(st) != row.identity:
            return "changed since it shipped"
        if open_paths is not None and os.path.realpath(path) in open_paths:
            return "open"
        return None


def _problem(report: Report, config: RetentionConfig) -> str | None:
    """What the alerts say of the last pass, None when nothing is wrong."""
    parts = []
    if report.low_disk and report.disk is not None:
        parts.append(
            f"spool disk {report.disk.free_percent:.1f}% free (floor {config.min_free_percent:g}%)"
        )
    if report.requeued:
        parts.append(
            f"{len(report.requeued)} remote cop{'y' if len(report.requeued) == 1 else 'ies'}"
            f" missing or different, shipped again: {report.requeued[0][1]}"
        )
    return "; ".join(parts) or None
