"""The agent's loop: start-up recovery, passes driven by inotify and due times, reconcile."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import date
from typing import TYPE_CHECKING, Any

import schedule

from agent.alerts import Alerts
from agent.cdr import CdrSource, wait_seconds
from agent.config import Config
from agent.errors import AgentError, DestinationDown, Interrupted, PermanentError, TransientError
from agent.log import kv
from agent.media.prepare import Prepared
from agent.memory import release_free_memory
from agent.model import RecordingState
from agent.pipeline import Pipeline, Stage, Upload
from agent.publish.manifest import day_of, entry
from agent.publish.site import publish_dirty
from agent.publish.webhook import Webhook
from agent.publish.webhook import body as webhook_body
from agent.publish.webhook import retry_delay as webhook_delay
from agent.spool.scan import day_folder, files_below, is_date_folder, recent_days, scan
from agent.spool.settle import open_files_under
from agent.spool.watcher import SpoolWatcher
from agent.status import summary
from agent.store.state import Store
from agent.systemd import Notifier
from agent.transport import Transport

if TYPE_CHECKING:
    from agent.metrics import Metrics

log = logging.getLogger(__name__)

PROBE_SECONDS = 30  # how often a paused destination is tried again
RECONCILE_DAYS = 1  # the periodic scan covers today and yesterday (and tomorrow)
IDLE_WAKE_SECONDS = 60
HISTORY_DAYS = 30  # events and settled webhooks older than this are pruned
HEALTH_SECONDS = 15  # metrics gauges, systemd status and alerts are refreshed this often
STATUS_FILE = "status.json"
STATUS_SECONDS = 60  # the heartbeat: status.json is rewritten at least this often
PUBLISH_SECONDS = 2  # during a long pass, manifests are rewritten at most this often,
PUBLISH_SHARE = 0.1  # and publishing (a busy day's page costs ~0.5 s) takes at most this
LATE_CDR_SWEEP_SECONDS = 60
LATE_CDR_SECONDS = 86400  # how long a shipped recording's missing CDR is still looked for


class _Work:
    """Copies and uploads in worker threads while the main thread settles the next
    recordings; every outcome is recorded on the main thread, the only one that touches
    the database. At most `parallel` uploads and one copy in flight."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.staging: dict[Future[Prepared], Stage] = {}
        self.uploads: dict[Future[None], Upload] = {}

    def submit(self, job: Stage) -> None:
        self.staging[self.agent.workers.submit(self.agent.pipeline.stage, job)] = job
        while len(self.staging) > 1 or len(self.uploads) >= self.agent.parallel:
            self._step()

    def wait_all(self) -> None:
        while self.staging or self.uploads:
            self._step()

    def _step(self) -> None:
        futures: list[Future[Any]] = [*self.staging, *self.uploads]
        for future in wait(futures, return_when=FIRST_COMPLETED).done:
            if future in self.staging:
                self._staged(future)
            else:
                self._uploaded(future)

    def _staged(self, future: Future[Prepared]) -> None:
        job = self.staging.pop(future)
        error = future.exception()
        prepared = None if error else future.result()
        upload = self.agent.pipeline.claim(job, prepared, error, self.agent.clock())
        if upload is None:
            return
        if self.agent.stop_event.is_set() or self.agent.paused_until is not None:
            self.agent.pipeline.finish(
                upload, Interrupted("not started"), self.agent.clock(), reraise=False
            )
            return
        self.uploads[self.agent.workers.submit(self.agent.pipeline.upload, upload)] = upload

    def _uploaded(self, future: Future[None]) -> None:
        job = self.uploads.pop(future)
        now = self.agent.clock()
        error = future.exception()
        self.agent.note_upload(job, error, now)
        try:
            self.agent.pipeline.finish(job, error, now)
            if error is None:
                self.agent._set_destination("ok")
        except DestinationDown as exc:
            self.agent._pause(str(exc), now)
        except Interrupted:
            pass  # the agent is stopping; the row was handed back


class _NoMetrics:
    """What the loop reports to when nothing serves metrics (metrics.listen = "", run
    --once, backfill): prometheus-client is then never imported."""

    last_loop_at: float | None = None

    def shipped(self, *, size: int, latency: float | None) -> None:
        pass

    def cdr_waited(self, seconds: float, *, found: bool) -> None:
        pass

    def error(self, kind: str) -> None:
        pass

    def destination(self, state: str) -> None:
        pass

    def loop_alive(self, now: float) -> None:
        pass

    def refresh(
        self, counts: Mapping[str, int], backlog: int, oldest_pending_seconds: float | None
    ) -> None:
        pass


class Agent:
    """Owns the pipeline and decides when each piece of work runs; `run_once` is one pass."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        transport: Transport,
        cdr: CdrSource | None = None,
        webhook: Webhook | None = None,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        watch: bool = True,
    ) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.clock = clock
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self.watcher = SpoolWatcher(config.spool.path, self.wake_event.set) if watch else None
        self.pipeline = Pipeline(
            config=config,
            store=store,
            transport=transport,
            should_stop=self.stop_event.is_set,
            backfill_cutoff=0.0,
            cdr=cdr,
            cdr_wait=wait_seconds(config.cdr),
            notify=webhook is not None,
        )
        self.webhook = webhook
        self.metrics: Metrics | _NoMetrics = _NoMetrics() if metrics is None else metrics
        self.pipeline.on_cdr_wait = self.metrics.cdr_waited
        self.notifier = notifier or Notifier({})  # no NOTIFY_SOCKET: every call a no-op
        self.alerts = Alerts(config.alerts)
        self.failures_in_a_row = 0
        self.paused_until: float | None = None
        self.paused_reason: str | None = None
        self._unswept: set[str] = set()
        self._destination: str | None = None  # the health record last written
        self._published_at = 0.0
        self._publish_took = 0.0
        self._owner_checked = False
        sftp = config.destination.type == "sftp"
        self.parallel = config.destination.connections if sftp else 1
        # One more worker than uploads: the next copy is made while they run.
        self.workers = ThreadPoolExecutor(max_workers=self.parallel + 1, thread_name_prefix="ship")
        self._watched_day: date | None = None

    # --- life cycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Safe from a signal handler: the loop notices at once."""
        self.stop_event.set()
        self.wake_event.set()

    def start(self, now: float) -> None:
        """Recover from whatever the last run left, then look at the spool."""
        stranded = self.store.recover(now)
        # Where a crash may have left temporaries; swept once the destination answers.
        self._unswept = {day_of(r.remote_path) for r in stranded if r.remote_path}
        self._unswept |= set(self.store.dirty_days())
        # Nothing is in flight now, so anything in staging is a leftover.
        shutil.rmtree(self.config.state.staging, ignore_errors=True)
        first_start = self.store.meta("first_start_at")
        if first_start is None:
            first_start = str(now)
            self.store.set_meta("first_start_at", first_start)
        window = self.config.spool.backfill_days * 86400
        self.pipeline.backfill_cutoff = float(first_start) - window
        self._probe(now)
        self._note_cdr_health()
        if self.watcher is not None:
            self._refresh_watches(now)
            self.watcher.start()
        # Ready once recovered and watching; the first full scan can take long.
        self.notifier.ready(f"recovered {len(stranded)} recording(s); scanning the spool")
        self.metrics.loop_alive(now)
        self.reconcile(now, days=int(self.config.spool.backfill_days) + 1)
        log.info(kv("started", spool=self.config.spool.path, recovered=len(stranded) or None))

    def close(self) -> None:
        self.notifier.close()
        self.workers.shutdown(wait=True)
        if self.watcher is not None:
            self.watcher.stop()
        self.transport.close()
        if self.pipeline.cdr is not None:
            self.pipeline.cdr.close()

    # --- discovery ---------------------------------------------------------------------

    def housekeeping(self, now: float) -> None:
        """Periodic job: catch what inotify missed, and keep the history bounded."""
        self.reconcile(now)
        pruned = self.store.prune(now - HISTORY_DAYS * 86400)
        if pruned:
            log.info(kv("pruned", rows=pruned))

    def reconcile(self, now: float, days: int = RECONCILE_DAYS) -> int:
        """Catch what inotify missed: observe every unknown or changed file of recent days."""
        paths = list(scan(self.config.spool.path, date.fromtimestamp(now), days))
        return self._observe_changed(paths, now)

    def _observe_changed(self, paths: list[str], now: float) -> int:
        known = self.store.identities(paths)
        count = 0
        for rel in paths:
            state_identity = known.get(rel)
            if state_identity is not None:
                state, identity = state_identity
                if state != RecordingState.DONE.value and state != RecordingState.SKIPPED.value:
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
        today = date.fromtimestamp(now)
        folders = {"", today.strftime("%Y"), today.strftime("%Y/%m")}
        folders |= {day_folder(day) for day in recent_days(today, RECONCILE_DAYS)}
        assert self.watcher is not None
        self.watcher.watch_only(folders)
        self._watched_day = today

    def _take_events(self, now: float) -> None:
        if self.watcher is None:
            return
        files, folders = self.watcher.drain()
        new_day = date.fromtimestamp(now) != self._watched_day
        if new_day or any(is_date_folder(f) for f in folders):
            self._refresh_watches(now)
            # Files written before the new folder's watch existed are only seen by a scan.
            for folder in folders:
                if is_date_folder(folder):
                    files += list(files_below(self.config.spool.path, folder))
        for rel in files:
            self.pipeline.observe(rel, now)

    # --- one pass ----------------------------------------------------------------------

    def _set_destination(self, state: str, reason: str | None = None) -> None:
        self.metrics.destination(state)
        value = json.dumps({"state": state, "reason": reason})
        if self._destination != value:  # written on change only, not once per file
            self.store.set_meta("destination", value)
            self._destination = value

    def _probe(self, now: float) -> bool:
        """Is the destination there? Paused when it refuses; a transient fault (server
        down) is left to the uploads' own retries."""
        try:
            self.transport.probe()
            if self._unswept:
                self.transport.sweep(sorted(self._unswept))
                self._unswept = set()
        except DestinationDown as exc:
            self._pause(str(exc), now)
            return False
        except TransientError as exc:
            log.warning(kv("destination-unreachable", reason=str(exc)))
            self._set_destination("failing", str(exc))
            return True
        if not self._owner_checked:
            self._check_owner()
        self.paused_until = self.paused_reason = None
        self._set_destination("ok")
        return True

    def _check_owner(self) -> None:
        """One agent owns one root: another host's status.json there stops this one."""
        data = self.transport.read_bytes(STATUS_FILE)
        try:
            owner = json.loads(data).get("host") if data else None
        except (ValueError, AttributeError):
            owner = None  # not ours to judge: it is rewritten at the first publish
        if owner and owner != socket.gethostname():
            raise AgentError(
                f"the destination root already belongs to the agent on {owner!r} (its"
                f" {STATUS_FILE}); one agent per root: choose another destination.root, or"
                f" delete {STATUS_FILE} there if that agent is gone for good"
            )
        self._owner_checked = True

    def write_status(self, now: float) -> None:
        """status.json at the root: the agent's health, readable from the webserver alone."""
        if self.paused_until is not None or not self._owner_checked:
            return
        document = summary(self.store, self.config, now)
        try:
            self.transport.write_bytes(STATUS_FILE, json.dumps(document, indent=1).encode())
        except (DestinationDown, TransientError) as exc:
            log.warning(kv("status-failed", error=str(exc)))

    def _pause(self, reason: str, now: float) -> None:
        if self.paused_until is None:
            log.error(kv("destination-paused", reason=reason))
        self.paused_until, self.paused_reason = now + PROBE_SECONDS, reason
        self._set_destination("paused", reason)

    def run_once(self, now: float) -> float | None:
        """Observe what inotify reported, then move every due recording; return when the
        next piece of work is due (None: nothing is waiting)."""
        self._take_events(now)
        if self.paused_until is not None and (now < self.paused_until or not self._probe(now)):
            return self.paused_until
        processed: set[int] = set()
        open_paths: frozenset[str] | None = None
        scanned = False
        work = _Work(self)
        while not self.stop_event.is_set() and self.paused_until is None:
            rows = [r for r in self.store.due(now) if r.id not in processed]
            if not rows:
                break
            if not scanned:  # one /proc scan per pass, not per file
                open_paths, scanned = open_files_under(self.config.spool.path), True
            for row in rows:
                if self.stop_event.is_set() or self.paused_until is not None:
                    break
                processed.add(row.id)
                job = self.pipeline.process(row, now, open_paths)
                if job is not None:
                    work.submit(job)
            work.wait_all()
            gap = max(PUBLISH_SECONDS, self._publish_took / PUBLISH_SHARE)
            if self.clock() - self._published_at >= gap:
                self._publish(now)  # a long backlog shows progress as it drains
        work.wait_all()
        self._publish(now)
        self.deliver_webhooks(self.clock())
        self._note_cdr_health()
        if self.paused_until is not None:
            return self.paused_until
        return self.store.next_due()

    def deliver_webhooks(self, now: float) -> int:
        """Send the CRM what it has not been told yet; a CRM that is down waits for its
        next attempt, and never holds up shipping. Returns how many were delivered."""
        if self.webhook is None:
            return 0
        delivered = 0
        for wid, rid, event, attempts in self.store.due_webhooks(now):
            row = self.store.get(rid)
            if row is None or row.remote_path is None:
                self.store.webhook_failed(wid, error="recording no longer shipped", retry_at=None)
                continue
            key = f"{rid}.{wid}"  # stable across retries: the CRM dedupes on it
            payload = webhook_body(event, key, entry(row))
            try:
                self.webhook.send(payload, event=event, key=key)
            except TransientError as exc:
                retry_at = now + webhook_delay(attempts + 1)
                self.store.webhook_failed(wid, error=str(exc), retry_at=retry_at)
                log.warning(kv("webhook-failed", id=rid, webhook_event=event, error=str(exc)))
                break  # the CRM is down: the rest wait for their turn
            except PermanentError as exc:
                self.store.webhook_failed(wid, error=str(exc), retry_at=None)
                log.error(kv("webhook-refused", id=rid, webhook_event=event, error=str(exc)))
                continue
            self.store.webhook_sent(wid, now=now)
            delivered += 1
        return delivered

    def health(self) -> tuple[bool, str]:
        """For /healthz, from the metrics thread: plain attributes only, no database."""
        if self.paused_until is not None:
            return False, f"destination paused: {self.paused_reason}"
        return True, "ok"

    def note_upload(self, job: Upload, error: BaseException | None, now: float) -> None:
        """Metrics and the failure streak the alerts watch."""
        if error is None:
            self.failures_in_a_row = 0
            closed = job.row.mtime_ns / 1e9  # when MixMonitor last wrote the file
            self.metrics.shipped(size=job.prepared.size, latency=max(0.0, now - closed))
        elif isinstance(error, TransientError | PermanentError):
            self.failures_in_a_row += 1
            self.metrics.error("upload")

    def check_health(self, now: float) -> None:
        """Periodic job: metrics gauges, systemd's status line, alerts."""
        status = summary(self.store, self.config, now)
        self.metrics.refresh(status["counts"], status["backlog"], status["oldest_pending_seconds"])
        destination = status["destination"]
        self.notifier.status(
            f"{status['counts']['done']} shipped, backlog {status['backlog']},"
            f" destination {destination['state']}"
        )
        self.alerts.observe(
            now=now,
            consecutive_failures=self.failures_in_a_row,
            oldest_pending_seconds=status["oldest_pending_seconds"],
            destination=destination["state"],
            reason=destination.get("reason") or self.paused_reason,
        )

    def fill_late_cdr(self, now: float) -> int:
        """Periodic job: late CDR rows fill in the manifests of recordings already shipped."""
        if self.pipeline.cdr is None or self.paused_until is not None:
            return 0
        filled = self.pipeline.fill_late_cdr(now, within=LATE_CDR_SECONDS)
        self._publish(now)
        self._note_cdr_health()
        return filled

    def _note_cdr_health(self) -> None:
        """What `status` says of the CDR source: ok, failing (with why) or disabled."""
        error = self.pipeline.cdr_error
        if self.pipeline.cdr is not None:
            value = json.dumps({"state": "failing" if error else "ok", "reason": error})
        elif self.config.cdr.type == "none":
            value = json.dumps({"state": "disabled", "reason": None})
        else:
            value = json.dumps({"state": "disabled", "reason": "no FreePBX configuration found"})
        if self.store.meta("cdr") != value:
            self.store.set_meta("cdr", value)

    def _publish(self, now: float) -> None:
        began = self.clock()
        try:
            if publish_dirty(self.store, self.transport, now, self.config.index):
                self.write_status(now)
                release_free_memory()  # a busy day's pages would otherwise stay in RSS
        except DestinationDown as exc:
            self._pause(str(exc), now)
        except TransientError as exc:  # the days stay dirty: the next pass tries again
            log.warning(kv("publish-failed", error=str(exc)))
        finally:
            self._published_at = self.clock()
            self._publish_took = self._published_at - began

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
        while not self.stop_event.is_set():
            now = self.clock()
            self.run_once(now)
            if self.paused_until is not None:
                break
            waits = [
                due
                for state, horizon in horizons.items()
                if (due := self.store.next_due([state])) is not None and due <= now + horizon
            ]
            if not waits:
                break
            self.stop_event.wait(max(0.0, min(waits) - self.clock()))
        self.write_status(self.clock())

    def run_forever(self) -> None:
        """`run`: until stop(); inotify and due times wake the loop, reconcile runs on a timer."""
        scheduler = schedule.Scheduler()
        scheduler.every(max(1, round(self.config.spool.reconcile_minutes * 60))).seconds.do(
            lambda: self.housekeeping(self.clock())
        )
        scheduler.every(LATE_CDR_SWEEP_SECONDS).seconds.do(lambda: self.fill_late_cdr(self.clock()))
        scheduler.every(STATUS_SECONDS).seconds.do(lambda: self.write_status(self.clock()))
        scheduler.every(HEALTH_SECONDS).seconds.do(lambda: self.check_health(self.clock()))
        self.start(self.clock())
        self.check_health(self.clock())
        while not self.stop_event.is_set():
            self.wake_event.clear()
            now = self.clock()
            next_due = self.run_once(now)
            scheduler.run_pending()
            self.metrics.loop_alive(self.clock())
            self.notifier.watchdog(self.clock())
            timeout = min(IDLE_WAKE_SECONDS, scheduler.idle_seconds or IDLE_WAKE_SECONDS)
            if next_due is not None:
                timeout = min(timeout, next_due - self.clock())
            if self.notifier.watchdog_interval is not None:
                timeout = min(timeout, self.notifier.watchdog_interval)
            self.wake_event.wait(max(0.0, timeout))
        self.notifier.stopping()
        log.info(kv("stopped"))
