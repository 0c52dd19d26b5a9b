"""Prometheus metrics and the /healthz endpoint on `metrics.listen`.

The daemon calls the `Metrics` hooks from its main loop; `MetricsServer` answers scrapes
from its own threads. prometheus_client's metrics are thread-safe, so the two only share
the registry and one float (the last loop pass).
"""

from __future__ import annotations

import functools
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from agent.config import parse_listen
from agent.errors import AgentError
from agent.log import kv
from agent.model import RecordingState
from agent.roles.health import NoMetrics

log = logging.getLogger(__name__)

ERROR_KINDS = (
    "upload",
    "staging",
    "cdr",
    "webhook",
    "publish",
    "quarantine",
    "retention-verify",  # a remote copy found missing or different: shipped again
)
RETENTION_RULES = ("age", "low-disk", "destination")
# File closed -> visible remotely: sub-second on a LAN, minutes behind a slow link or a
# settle period.
UPLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# The CDR wait gives up after cdr.wait_seconds (120 s unless batch mode asks for more).
CDR_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600)
STALE_AFTER = 120.0  # seconds without a loop pass before /healthz says the loop is stuck
# shutdown() waits for the serving loop's next poll: keep stopping (and the tests) quick.
POLL_SECONDS = 0.1
REQUEST_TIMEOUT = 5.0  # a client that connects and says nothing cannot hold close() up longer


class Metrics:
    """Every recsync_* metric, in a registry of its own (tests make several)."""

    def __init__(self, destination: str = "default") -> None:
        self.name = destination  # the destination whose agent reports here (the first)
        self.registry = CollectorRegistry()
        self.last_loop_at: float | None = None  # read by /healthz from the server thread
        r = self.registry
        self._shipped = Counter("recsync_shipped", "Recordings shipped", registry=r)
        self._shipped_bytes = Counter(
            "recsync_shipped_bytes", "Bytes of recordings shipped", registry=r
        )
        self._latency = Histogram(
            "recsync_upload_latency_seconds",
            "From the recording file closing to it being visible at the destination",
            buckets=UPLOAD_BUCKETS,
            registry=r,
        )
        self._cdr_wait = Histogram(
            "recsync_cdr_wait_seconds",
            "How long a recording waited for its CDR row",
            ["found"],
            buckets=CDR_BUCKETS,
            registry=r,
        )
        self._errors = Counter("recsync_errors", "Errors by kind", ["kind"], registry=r)
        self._up = Gauge(
            "recsync_destination_up", "1 while the destination takes uploads", registry=r
        )
        self._paused = Gauge(
            "recsync_destination_paused", "1 while the destination is paused", registry=r
        )
        self._recordings = Gauge(
            "recsync_recordings", "Recordings in the state database", ["state"], registry=r
        )
        self._backlog = Gauge("recsync_backlog", "Recordings not shipped yet", registry=r)
        self._oldest = Gauge(
            "recsync_oldest_pending_seconds",
            "Age of the oldest recording not shipped yet (0 when none)",
            registry=r,
        )
        self._loop = Gauge(
            "recsync_loop_last_pass_timestamp_seconds",
            "When the main loop last made a pass (Unix time)",
            registry=r,
        )
        self._retired = Counter(
            "recsync_retention_removed",
            "Originals retention took out of the spool (deleted or moved), by rule",
            ["rule"],
            registry=r,
        )
        self._retired_bytes = Counter(
            "recsync_retention_removed_bytes", "Bytes retention freed in the spool", registry=r
        )
        self._spool_free = Gauge(
            "recsync_spool_free_bytes", "Free space on the spool's file system", registry=r
        )
        self._spool_free_ratio = Gauge(
            "recsync_spool_free_ratio",
            "Free space on the spool's file system, 0 to 1 (retention.min_free_percent / 100)",
            registry=r,
        )
        # Per destination (several destinations: each agent's, by name), beside the
        # unlabelled series above, which are the first destination's.
        self._dest_shipped = Counter(
            "recsync_destination_shipped",
            "Recordings shipped, by destination",
            ["destination"],
            registry=r,
        )
        self._dest_backlog = Gauge(
            "recsync_destination_backlog",
            "Recordings not shipped yet, by destination",
            ["destination"],
            registry=r,
        )
        self._dest_oldest = Gauge(
            "recsync_destination_oldest_pending_seconds",
            "Age of the oldest recording not shipped yet, by destination (0 when none)",
            ["destination"],
            registry=r,
        )
        self._dest_paused = Gauge(
            "recsync_destination_paused_by_name",
            "1 while the destination is paused, by destination",
            ["destination"],
            registry=r,
        )
        for rule in RETENTION_RULES:
            self._retired.labels(rule=rule)
        # Known label values start at 0 so rate() and absent-series alerts work from the start.
        for found in ("true", "false"):
            self._cdr_wait.labels(found=found)
        for kind in ERROR_KINDS:
            self._errors.labels(kind=kind)
        for state in RecordingState:
            self._recordings.labels(state=state.value)

    def for_destination(self, name: str) -> DestinationMetrics:
        """What another destination's agent reports to: its labelled series only."""
        return DestinationMetrics(self, name)

    def shipped(self, *, size: int, latency: float | None) -> None:
        self._dest_shipped.labels(destination=self.name).inc()
        self._shipped.inc()
        self._shipped_bytes.inc(size)
        if latency is not None:  # unknown when the close time is (e.g. after a restart)
            self._latency.observe(max(0.0, latency))

    def cdr_waited(self, seconds: float, *, found: bool) -> None:
        self._cdr_wait.labels(found="true" if found else "false").observe(max(0.0, seconds))

    def error(self, kind: str) -> None:
        self._errors.labels(kind=kind).inc()

    def retired(self, *, rule: str, size: int) -> None:
        self._retired.labels(rule=rule).inc()
        self._retired_bytes.inc(size)

    def spool_disk(self, *, free_bytes: int, free_percent: float) -> None:
        self._spool_free.set(free_bytes)
        self._spool_free_ratio.set(free_percent / 100)

    def destination(self, state: str) -> None:
        """Up when "ok" or "failing" (failing uploads are retried), paused when "paused"."""
        paused = state == "paused"
        self._dest_paused.labels(destination=self.name).set(1 if paused else 0)
        self._up.set(0 if paused else 1)
        self._paused.set(1 if paused else 0)

    def loop_alive(self, now: float) -> None:
        self.last_loop_at = now
        self._loop.set(now)

    def refresh(
        self, counts: Mapping[str, int], backlog: int, oldest_pending_seconds: float | None
    ) -> None:
        # States missing from `counts` are set to 0 rather than left at their last value.
        known = {state.value for state in RecordingState}
        for state in sorted(known | set(counts)):
            self._recordings.labels(state=state).set(counts.get(state, 0))
        self._backlog.set(backlog)
        self._oldest.set(oldest_pending_seconds or 0)
        self._dest_backlog.labels(destination=self.name).set(backlog)
        self._dest_oldest.labels(destination=self.name).set(oldest_pending_seconds or 0)


class DestinationMetrics(NoMetrics):
    """A destination other than the first: its `destination`-labelled series in the
    first's registry; the process-wide series (spool disk, loop, CDR) stay the first's."""

    def __init__(self, parent: Metrics, name: str) -> None:
        self.parent = parent
        self.name = name
        parent._dest_paused.labels(destination=name).set(0)

    def shipped(self, *, size: int, latency: float | None) -> None:
        self.parent._dest_shipped.labels(destination=self.name).inc()

    def destination(self, state: str) -> None:
        self.parent._dest_paused.labels(destination=self.name).set(1 if state == "paused" else 0)

    def refresh(
        self, counts: Mapping[str, int], backlog: int, oldest_pending_seconds: float | None
    ) -> None:
        self.parent._dest_backlog.labels(destination=self.name).set(backlog)
        self.parent._dest_oldest.labels(destination=self.name).set(oldest_pending_seconds or 0)


class _Server(ThreadingHTTPServer):
    # Request threads are daemons (never hold up exit) but still joined by server_close.
    block_on_close = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can hang on a broken DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """GET /metrics and GET /healthz from a daemon thread."""

    def __init__(
        self,
        metrics: Metrics,
        listen: str,
        *,
        healthy: Callable[[], tuple[bool, str]],
        clock: Callable[[], float] = time.time,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self.metrics = metrics
        self.listen = listen
        self.address = parse_listen(listen)
        self.healthy = healthy
        self.clock = clock
        self.stale_after = stale_after
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        host, port = self.address
        server_class = _Server6 if ":" in host else _Server
        handler = functools.partial(_Handler, app=self)
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise AgentError(
                f"metrics.listen {self.listen}: cannot listen there: {exc.strerror or exc}"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            name="recsync-metrics",
            daemon=True,
        )
        self._thread.start()
        log.info(kv("metrics-listening", address=f"{self.listen.rsplit(':', 1)[0]}:{self.port}"))

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer.port before start()")
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and join every thread; safe to call twice or without start()."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()

    def health(self) -> tuple[bool, str]:
        """(True, "ok") or (False, why): the loop is stuck, or `healthy()` said no."""
        last = self.metrics.last_loop_at
        if last is None:
            return False, "main loop not started"
        age = self.clock() - last
        if age > self.stale_after:
            return False, f"main loop stalled for {age:.0f} s"
        try:
            ok, reason = self.healthy()
        except Exception as exc:  # a broken check must still answer, and answer "unhealthy"
            return False, f"health check failed: {exc}"
        return (True, "ok") if ok else (False, reason)


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT

    def __init__(self, *args: Any, app: MetricsServer, **kwargs: Any) -> None:
        self.app = app  # before super().__init__, which handles the request
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, generate_latest(self.app.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, reason = self.app.health()
            self._send(200 if ok else 503, f"{reason}\n".encode(), "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes come every few seconds: keep them out of the journal unless debugging.
        log.debug(kv("metrics-request", client=self.address_string(), request=format % args))
