"""The agent: its roles wired together, and the two drivers (`run --once`, `run`)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import schedule

from agent.alerts import Alerts
from agent.cdr import CdrSource, wait_seconds
from agent.config import Config
from agent.errors import ConfigError
from agent.log import kv
from agent.media.once import PreparedOnce
from agent.model import RecordingState
from agent.pipeline import Pipeline
from agent.publish.manifest import day_of
from agent.publish.webhook import Webhook
from agent.roles.destination import Destination
from agent.roles.discovery import Discovery
from agent.roles.health import Health, NoMetrics
from agent.roles.outbox import Outbox
from agent.roles.publisher import Publisher
from agent.roles.retention import Report, Retention
from agent.roles.shipping import Shipping
from agent.status import summary
from agent.store.state import Store
from agent.systemd import Notifier
from agent.transport import Transport, as_s3, root_path, shared_root
from agent.wakeup import Wakeup

if TYPE_CHECKING:
    from agent.metrics import Metrics
    from agent.spool.shared import Feed

log = logging.getLogger(__name__)

IDLE_WAKE_SECONDS = 60
HISTORY_DAYS = 30  # events and settled webhooks older than this are pruned
HEALTH_SECONDS = 15  # metrics gauges, systemd status and alerts are refreshed this often
STATUS_SECONDS = 60  # the heartbeat: status.json is rewritten at least this often
LATE_CDR_SWEEP_SECONDS = 60
LATE_CDR_SECONDS = 86400  # how long a shipped recording's missing CDR is still looked for


def download_links(transport: Transport, seconds: int) -> Callable[[str], str] | None:
    """Remote path -> a presigned GET link valid `seconds`, for the webhooks; None when off.
    Signed by the transport's real clock, not a pass's `now`: the server judges expiry."""
    if not seconds:
        return None
    s3 = as_s3(transport)
    if s3 is None:  # the config allows it with s3 only; a test may wire another
        raise ConfigError("webhook.presign_seconds: the destination cannot presign links")
    return lambda remote: s3.presign(root_path(transport, remote), seconds)


def named_destination(config: Config) -> str | None:
    """This agent's destination's name where the config has several, else None."""
    return config.destination.name if len(config.destinations) > 1 else None


class Agent:
    """Wires the roles and runs them: `run_once(now)` is one pass, the drivers decide
    when passes and the periodic jobs run. Only the drivers read the clock."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        transport: Transport,
        cdr: CdrSource | None = None,
        webhook: Webhook | None = None,
        notifier: Notifier | None = None,
        metrics: Metrics | NoMetrics | None = None,
        clock: Callable[[], float] = time.time,
        watch: bool = True,
        spool_feed: Callable[[Callable[[], None]], Feed] | None = None,
        copies: PreparedOnce | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.clock = clock
        self.stopping = False  # set by stop(), read by every loop and transfer
        self.wakeup = Wakeup()
        self.pipeline = Pipeline(
            config=config,
            store=store,
            transport=transport,
            should_stop=self.should_stop,
            backfill_cutoff=0.0,
            cdr=cdr,
            cdr_wait=wait_seconds(config.cdr),
            notify=webhook is not None,
            copies=copies,
        )
        self.metrics: Metrics | NoMetrics = NoMetrics() if metrics is None else metrics
        self.pipeline.on_cdr_wait = self.metrics.cdr_waited
        self.pipeline.on_upload_fault = lambda folder, now: self.destination.cut_short(
            [folder], now
        )
        self.notifier = notifier or Notifier({})  # no NOTIFY_SOCKET: every call a no-op

        def status(now: float) -> dict[str, Any]:
            return summary(store, config, now)

        shared = shared_root(transport)
        self.destination = Destination(
            transport=transport,
            store=store,
            summary=status,
            on_state=self.metrics.destination,
            site=config.destination.site,
            root=None if shared is None else shared[0],
        )
        self.health = Health(
            store=store,
            summary=status,
            alerts=Alerts(config.alerts, destination=named_destination(config)),
            metrics=self.metrics,
            notifier=self.notifier,
            paused_reason=lambda: self.destination.paused_reason,
            retention_problem=lambda: self.retention.problem,
        )
        self.discovery = Discovery(
            spool=config.spool.path,
            pipeline=self.pipeline,
            wake=self.wakeup.ring,
            watch=watch,
            feed=spool_feed,
        )
        self.shipping = Shipping(
            pipeline=self.pipeline,
            destination=self.destination,
            health=self.health,
            parallel=transport.features.parallel,
            should_stop=self.should_stop,
            wake=self.wakeup.ring,
        )
        self.publisher = Publisher(
            store=store, transport=transport, destination=self.destination, pages=config.index
        )
        self.outbox = None
        if webhook is not None:
            links = download_links(transport, config.webhook.presign_seconds)
            self.outbox = Outbox(
                store=store, webhook=webhook, download_url=links, site=config.destination.site
            )
        self.retention = Retention(
            config=config.retention,
            spool=config.spool.path,
            store=store,
            transport=transport,
            destination=self.destination,
            metrics=self.metrics,
            should_stop=self.should_stop,
        )

    def should_stop(self) -> bool:
        return self.stopping

    # --- life cycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Safe from a signal handler (a flag and a pipe write): the loop notices at once."""
        self.stopping = True
        self.wakeup.ring()

    def start(self, now: float) -> None:
        """Recover from whatever the last run left, then look at the spool."""
        stranded = self.store.recover(now)
        self.destination.sweep_later(day_of(r.remote_path) for r in stranded if r.remote_path)
        # Where a transfer cut by a fault (its server gone) left a temporary it could not
        # remove, in this run or the last.
        self.destination.sweep_later(self.destination.cut_folders())
        self.destination.sweep_later(self.store.days.dirty())
        # Where a killed publish or heartbeat may have left a temporary: the root (pages,
        # status.json) and the folders of the published files.
        self.destination.sweep_later(["", "search", "static"])
        # Nothing is in flight now, so anything in staging is a leftover.
        shutil.rmtree(self.config.state.staging, ignore_errors=True)
        first_start = self.store.meta("first_start_at")
        if first_start is None:
            first_start = str(now)
            self.store.set_meta("first_start_at", first_start, now=now)
        window = self.config.spool.backfill_days * 86400
        self.pipeline.backfill_cutoff = float(first_start) - window
        self.destination.probe(now)
        self._record_cdr(now)
        self.discovery.start(now)
        # Ready once recovered and watching; the first full scan can take long.
        self.notifier.ready(f"recovered {len(stranded)} recording(s); scanning the spool")
        self.metrics.loop_alive(now)
        self.discovery.reconcile(now, days=int(self.config.spool.backfill_days) + 1)
        log.info(kv("started", spool=self.config.spool.path, recovered=len(stranded) or None))

    def close(self) -> None:
        self.notifier.close()
        self.shipping.close()
        self.discovery.stop()
        self.transport.close()
        if self.pipeline.cdr is not None:
            self.pipeline.cdr.close()
        self.wakeup.close()

    # --- one pass ----------------------------------------------------------------------

    def run_once(self, now: float, *, drain: bool = True) -> float | None:
        """Observe what inotify reported, then move every due recording; return when the
        next piece of work is due (None: nothing is waiting). Without `drain` the
        transfers still running go on into the next pass (`run`; see Shipping.step)."""
        if self.pipeline.copies is not None:  # kept for a destination that stopped coming
            self.pipeline.copies.tidy()
        self.discovery.take_events(now)
        if not self.destination.ready(now):
            self.shipping.drain(now)  # what a pause left running
            self.retention.step(now)  # measures the disk; deletes nothing while paused
            return self.destination.paused_until

        def show_progress() -> None:  # a long backlog shows progress as it drains
            if self.publisher.due():
                self.publisher.publish(now)

        self.shipping.step(now, between_batches=show_progress, drain=drain)
        self.retention.step(now)  # paced: a pass every few minutes at most; before the
        pages_due = None  # publish, which rewrites the days it expired
        if drain or self.publisher.due():
            self.publisher.publish(now)
        elif self.store.days.dirty():
            # In `run` the pages keep their pace, as during a long pass: a busy day's
            # page costs more than shipping the next call, which would wait behind it.
            pages_due = now + self.publisher.due_in()
        if self.outbox is not None:
            self.outbox.deliver(now)
        self._record_cdr(now)
        if self.destination.paused:
            return self.destination.paused_until
        dues = (self.store.next_due(besides=self.shipping.busy()), pages_due)
        return min((due for due in dues if due is not None), default=None)

    # --- periodic jobs (plain functions of `now`, which tests call directly) -----------

    def housekeeping(self, now: float) -> None:
        """Catch what inotify missed, and keep the history bounded."""
        self.discovery.reconcile(now)
        pruned = self.store.prune(now - HISTORY_DAYS * 86400, now=now)
        if pruned:
            log.info(kv("pruned", rows=pruned))

    def fill_late_cdr(self, now: float) -> int:
        """Late CDR rows fill in the manifests of recordings already shipped."""
        if self.pipeline.cdr is None or self.destination.paused:
            return 0
        filled = self.pipeline.fill_late_cdr(now, within=LATE_CDR_SECONDS)
        self.publisher.publish(now)
        self._record_cdr(now)
        return filled

    def rebuild_index(self, now: float) -> int:
        """`recsync index rebuild`: every day that holds a shipped recording, its static
        files and the root page published again from the state database; returns how
        many days (0 when the destination refuses: `destination.paused_reason` says why)."""
        self.destination.probe(now)
        if self.destination.paused:
            return 0
        self.store.set_meta("static_version", "", now=now)  # the static files too
        self.store.set_meta("search_listing", "", now=now)  # and the search listing
        days = self.store.days.mark_all_dirty(now=now)
        self.publisher.publish(now)
        return days

    def apply_retention(self, now: float, *, dry_run: bool = False) -> Report:
        """`recsync retention`: one pass now, whatever the pacing; alerts told what it found."""
        if not dry_run:
            self.destination.probe(now)
        report = self.retention.apply(now, dry_run=dry_run)
        if not dry_run:
            self.health.check(now)
        return report

    def _record_cdr(self, now: float) -> None:
        off = None if self.config.cdr.type == "none" else "no FreePBX configuration found"
        self.health.record_cdr(
            enabled=self.pipeline.cdr is not None,
            error=self.pipeline.cdr_error,
            reason_off=off,
            now=now,
        )

    # --- drivers -----------------------------------------------------------------------

    def run_until_idle(self) -> None:
        """`run --once`: everything due now, waiting out only short waits (quiet periods,
        CDR rows); not open recordings, stale headers or retry backoff."""
        horizons = {
            RecordingState.PENDING: self.config.spool.settle_seconds + 1,
            RecordingState.WAITING_CDR: self.pipeline.cdr_wait + 1,
        }
        self.start(self.clock())
        self.fill_late_cdr(self.clock())
        self.retention.checks_per_pass = None  # everything due now, in one pass
        # One retention pass, after the shipping: one that ran while calls still settled
        # would leave those for a pass minutes later, which `run --once` never reaches.
        retention_at, self.retention.next_pass_at = self.retention.next_pass_at, float("inf")
        while not self.stopping:
            now = self.clock()
            self.run_once(now)
            if self.destination.paused:
                break
            waits = [
                due
                for state, horizon in horizons.items()
                if (due := self.store.next_due([state])) is not None and due <= now + horizon
            ]
            if not waits:
                break
            self.wakeup.wait(min(waits) - self.clock())
        self.retention.next_pass_at = retention_at
        if not self.stopping and self.retention.step(self.clock()) is not None:
            self.publisher.publish(self.clock())  # the days it expired
        self.publisher.heartbeat(self.clock())

    def run_forever(self) -> None:
        """`run`: until stop(); inotify and due times wake the loop, reconcile runs on a timer."""
        scheduler = schedule.Scheduler()
        scheduler.every(max(1, round(self.config.spool.reconcile_minutes * 60))).seconds.do(
            lambda: self.housekeeping(self.clock())
        )
        scheduler.every(LATE_CDR_SWEEP_SECONDS).seconds.do(lambda: self.fill_late_cdr(self.clock()))
        scheduler.every(STATUS_SECONDS).seconds.do(lambda: self.publisher.heartbeat(self.clock()))
        scheduler.every(HEALTH_SECONDS).seconds.do(lambda: self.health.check(self.clock()))
        self.start(self.clock())
        self.health.check(self.clock())
        while not self.stopping:
            self.wakeup.clear()
            now = self.clock()
            next_due = self.run_once(now, drain=False)
            scheduler.run_pending()
            self.metrics.loop_alive(self.clock())
            self.notifier.watchdog(self.clock())
            timeout = min(IDLE_WAKE_SECONDS, scheduler.idle_seconds or IDLE_WAKE_SECONDS)
            if next_due is not None:
                timeout = min(timeout, next_due - self.clock())
            if self.notifier.watchdog_interval is not None:
                timeout = min(timeout, self.notifier.watchdog_interval)
            self.wakeup.wait(timeout)
        self.shipping.drain(self.clock())
        self.notifier.stopping()
        log.info(kv("stopped"))
