"""What the agent tells about itself: metrics, systemd's status line, alerts, CDR health."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.alerts import Alerts
from agent.errors import PermanentError, TransientError
from agent.store.state import Store
from agent.systemd import Notifier

if TYPE_CHECKING:
    from agent.metrics import Metrics


class NoMetrics:
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

    def retired(self, *, rule: str, size: int) -> None:
        pass

    def spool_disk(self, *, free_bytes: int, free_percent: float) -> None:
        pass

    def loop_alive(self, now: float) -> None:
        pass

    def refresh(
        self, counts: Mapping[str, int], backlog: int, oldest_pending_seconds: float | None
    ) -> None:
        pass


class Health:
    """Counts what happens to uploads and, every HEALTH_SECONDS, turns the status summary
    into gauges, systemd's status line and alerts."""

    def __init__(
        self,
        *,
        store: Store,
        summary: Callable[[float], dict[str, Any]],
        alerts: Alerts,
        metrics: Metrics | NoMetrics,
        notifier: Notifier,
        paused_reason: Callable[[], str | None],
        retention_problem: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.store = store
        self.summary = summary
        self.alerts = alerts
        self.metrics = metrics
        self.notifier = notifier
        self.paused_reason = paused_reason
        self.retention_problem = retention_problem  # low spool disk, re-queued copies
        self.failures_in_a_row = 0

    def upload_ended(
        self, *, size: int, closed_at: float, error: BaseException | None, now: float
    ) -> None:
        """Metrics and the failure streak the alerts watch; `closed_at` is when MixMonitor
        last wrote the file."""
        if error is None:
            self.failures_in_a_row = 0
            self.metrics.shipped(size=size, latency=max(0.0, now - closed_at))
        elif isinstance(error, TransientError | PermanentError):
            self.failures_in_a_row += 1
            self.metrics.error("upload")

    def check(self, now: float) -> None:
        """Periodic job: metrics gauges, systemd's status line, alerts."""
        status = self.summary(now)
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
            reason=destination.get("reason") or self.paused_reason(),
            retention=self.retention_problem(),
        )

    def record_cdr(
        self, *, enabled: bool, error: str | None, reason_off: str | None, now: float
    ) -> None:
        """What `status` says of the CDR source: ok, failing (with why) or disabled."""
        if enabled:
            value = json.dumps({"state": "failing" if error else "ok", "reason": error})
        else:
            value = json.dumps({"state": "disabled", "reason": reason_off})
        if self.store.meta("cdr") != value:
            self.store.set_meta("cdr", value, now=now)
