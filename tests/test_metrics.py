"""Prometheus metrics and /healthz: the hooks, the listen address, the HTTP server."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.errors import AgentError
from agent.metrics import ERROR_KINDS, Metrics, MetricsServer, parse_listen

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: Metrics) -> Samples:
    """What a scrape would see, parsed back from the text exposition."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, /, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def get(server: MetricsServer, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def serve() -> Iterator[Callable[..., MetricsServer]]:
    started: list[MetricsServer] = []

    def make(
        metrics: Metrics,
        listen: str = "127.0.0.1:0",
        healthy: Callable[[], tuple[bool, str]] = lambda: (True, "ok"),
        **kwargs: Any,
    ) -> MetricsServer:
        server = MetricsServer(metrics, listen, healthy=healthy, **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


# --- hooks ---------------------------------------------------------------------------


def test_a_fresh_registry_shows_every_family_at_zero() -> None:
    found = samples(Metrics())
    assert value(found, "recsync_shipped_total") == 0
    assert value(found, "recsync_backlog") == 0
    assert value(found, "recsync_recordings", state="pending") == 0
    assert value(found, "recsync_recordings", state="quarantined") == 0
    for kind in ERROR_KINDS:
        assert value(found, "recsync_errors_total", kind=kind) == 0
    assert value(found, "recsync_cdr_wait_seconds_count", found="false") == 0


def test_registries_are_independent() -> None:
    one, two = Metrics(), Metrics()
    one.shipped(size=10, latency=None)
    assert value(samples(one), "recsync_shipped_total") == 1
    assert value(samples(two), "recsync_shipped_total") == 0


def test_shipped_counts_files_bytes_and_latency() -> None:
    metrics = Metrics()
    metrics.shipped(size=1000, latency=0.3)
    metrics.shipped(size=500, latency=42.0)
    metrics.shipped(size=24, latency=None)  # close time unknown: counted, not timed
    found = samples(metrics)
    assert value(found, "recsync_shipped_total") == 3
    assert value(found, "recsync_shipped_bytes_total") == 1524
    assert value(found, "recsync_upload_latency_seconds_count") == 2
    assert value(found, "recsync_upload_latency_seconds_sum") == pytest.approx(42.3)
    assert value(found, "recsync_upload_latency_seconds_bucket", le="0.05") == 0
    assert value(found, "recsync_upload_latency_seconds_bucket", le="0.5") == 1
    assert value(found, "recsync_upload_latency_seconds_bucket", le="60.0") == 2
    assert value(found, "recsync_upload_latency_seconds_bucket", le="600.0") == 2


def test_cdr_wait_is_split_by_found() -> None:
    metrics = Metrics()
    metrics.cdr_waited(3.0, found=True)
    metrics.cdr_waited(1.5, found=True)
    metrics.cdr_waited(120.0, found=False)
    found = samples(metrics)
    assert value(found, "recsync_cdr_wait_seconds_count", found="true") == 2
    assert value(found, "recsync_cdr_wait_seconds_sum", found="true") == 4.5
    assert value(found, "recsync_cdr_wait_seconds_count", found="false") == 1
    assert value(found, "recsync_cdr_wait_seconds_bucket", found="false", le="60.0") == 0
    assert value(found, "recsync_cdr_wait_seconds_bucket", found="false", le="120.0") == 1


def test_errors_by_kind() -> None:
    metrics = Metrics()
    metrics.error("upload")
    metrics.error("upload")
    metrics.error("webhook")
    found = samples(metrics)
    assert value(found, "recsync_errors_total", kind="upload") == 2
    assert value(found, "recsync_errors_total", kind="webhook") == 1
    assert value(found, "recsync_errors_total", kind="cdr") == 0


@pytest.mark.parametrize(
    ("state", "up", "paused"), [("ok", 1, 0), ("failing", 1, 0), ("paused", 0, 1)]
)
def test_destination_up_and_paused(state: str, up: float, paused: float) -> None:
    metrics = Metrics()
    metrics.destination("paused")  # the gauges follow the latest state, not the first
    metrics.destination(state)
    found = samples(metrics)
    assert value(found, "recsync_destination_up") == up
    assert value(found, "recsync_destination_paused") == paused


def test_refresh_sets_state_counts_backlog_and_oldest() -> None:
    metrics = Metrics()
    metrics.refresh({"pending": 3, "done": 40, "failed": 1}, 4, 75.5)
    found = samples(metrics)
    assert value(found, "recsync_recordings", state="pending") == 3
    assert value(found, "recsync_recordings", state="done") == 40
    assert value(found, "recsync_backlog") == 4
    assert value(found, "recsync_oldest_pending_seconds") == 75.5

    metrics.refresh({"done": 44}, 0, None)  # nothing waiting: stale values do not linger
    found = samples(metrics)
    assert value(found, "recsync_recordings", state="pending") == 0
    assert value(found, "recsync_recordings", state="done") == 44
    assert value(found, "recsync_backlog") == 0
    assert value(found, "recsync_oldest_pending_seconds") == 0


def test_loop_alive_is_exported_as_a_timestamp() -> None:
    metrics = Metrics()
    metrics.loop_alive(1_700_000_000.0)
    assert metrics.last_loop_at == 1_700_000_000.0
    found = samples(metrics)
    assert value(found, "recsync_loop_last_pass_timestamp_seconds") == 1_700_000_000.0


# --- parse_listen ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("10.1.2.3:0", ("10.1.2.3", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:9464", ("::", 9464)),
        (" 127.0.0.1:9464 ", ("127.0.0.1", 9464)),
    ],
)
def test_parse_listen_accepts(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("", "host:port"),
        ("9464", "host:port"),
        (":9464", "host:port"),
        ("127.0.0.1", "host:port"),
        ("127.0.0.1:", "bad port"),
        ("127.0.0.1:http", "bad port"),
        ("127.0.0.1:65536", "bad port"),
        ("127.0.0.1:-1", "bad port"),
        ("127.0.0.1:\uff19\uff14", "bad port"),  # full-width digits: isdigit() but not ASCII
        ("::1:9464", "brackets"),
        ("[::1]", "bad port"),
        ("[]:9464", "bad host"),
        ("my host:9464", "bad host"),
    ],
)
def test_parse_listen_rejects(listen: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_listen(listen)
    assert "metrics.listen" in str(caught.value)


# --- the HTTP server -------------------------------------------------------------------


def test_metrics_endpoint_serves_the_registry(serve: Callable[..., MetricsServer]) -> None:
    metrics = Metrics()
    metrics.shipped(size=2048, latency=1.0)
    server = serve(metrics)
    assert server.port > 0
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    families = {family.name for family in text_string_to_metric_families(body)}
    assert {"recsync_shipped", "recsync_upload_latency_seconds", "recsync_backlog"} <= families
    assert "recsync_shipped_bytes_total 2048.0" in body
    # Only our registry: the process/platform collectors of the global one are not there.
    assert all(name.startswith("recsync_") for name in families)


def test_healthz_ok_while_healthy_and_the_loop_is_fresh(
    serve: Callable[..., MetricsServer],
) -> None:
    clock = Clock()
    metrics = Metrics()
    metrics.loop_alive(clock.now - 119)
    server = serve(metrics, clock=clock)
    assert get(server, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")


def test_healthz_503_with_the_reason_when_paused(serve: Callable[..., MetricsServer]) -> None:
    clock = Clock()
    metrics = Metrics()
    metrics.loop_alive(clock.now)
    server = serve(metrics, clock=clock, healthy=lambda: (False, "paused: permission denied"))
    status, _, body = get(server, "/healthz")
    assert (status, body) == (503, "paused: permission denied\n")


def test_healthz_503_when_the_loop_is_stale(serve: Callable[..., MetricsServer]) -> None:
    clock = Clock()
    metrics = Metrics()
    metrics.loop_alive(clock.now)
    server = serve(metrics, clock=clock)
    assert get(server, "/healthz")[0] == 200
    clock.now += 300
    status, _, body = get(server, "/healthz")
    assert (status, body) == (503, "main loop stalled for 300 s\n")
    metrics.loop_alive(clock.now)  # the loop comes back: so does the endpoint
    assert get(server, "/healthz")[0] == 200


def test_healthz_stale_after_is_configurable(serve: Callable[..., MetricsServer]) -> None:
    clock = Clock()
    metrics = Metrics()
    metrics.loop_alive(clock.now - 11)
    server = serve(metrics, clock=clock, stale_after=10)
    assert get(server, "/healthz")[:3:2] == (503, "main loop stalled for 11 s\n")


def test_healthz_503_before_the_first_loop_pass(serve: Callable[..., MetricsServer]) -> None:
    server = serve(Metrics())
    assert get(server, "/healthz")[:3:2] == (503, "main loop not started\n")


def test_healthz_503_when_the_check_itself_fails(serve: Callable[..., MetricsServer]) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    metrics = Metrics()
    metrics.loop_alive(Clock().now)
    server = serve(metrics, clock=Clock(), healthy=broken)
    assert get(server, "/healthz")[:3:2] == (503, "health check failed: boom\n")


@pytest.mark.parametrize("path", ["/", "/metricsx", "/healthz/x", "/favicon.ico"])
def test_other_paths_are_404(serve: Callable[..., MetricsServer], path: str) -> None:
    assert get(serve(Metrics()), path)[0] == 404


def test_a_query_string_is_ignored(serve: Callable[..., MetricsServer]) -> None:
    assert get(serve(Metrics()), "/metrics?name[]=recsync_backlog")[0] == 200


def test_close_joins_every_thread() -> None:
    before = set(threading.enumerate())
    server = MetricsServer(Metrics(), "127.0.0.1:0", healthy=lambda: (True, "ok"))
    server.start()
    assert len(set(threading.enumerate()) - before) == 1  # the serving thread
    for _ in range(5):
        assert get(server, "/metrics")[0] == 200
    server.close()
    assert set(threading.enumerate()) == before  # already joined: no waiting here
    server.close()  # twice is fine


def test_close_without_start_is_fine() -> None:
    server = MetricsServer(Metrics(), "127.0.0.1:0", healthy=lambda: (True, "ok"))
    server.close()
    with pytest.raises(RuntimeError):
        _ = server.port


def test_a_taken_port_is_a_clear_error(serve: Callable[..., MetricsServer]) -> None:
    first = serve(Metrics())
    second = MetricsServer(Metrics(), f"127.0.0.1:{first.port}", healthy=lambda: (True, "ok"))
    with pytest.raises(AgentError, match=f"metrics.listen 127.0.0.1:{first.port}: cannot listen"):
        second.start()
    second.close()


def test_a_bad_listen_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="brackets"):
        MetricsServer(Metrics(), "::1:9464", healthy=lambda: (True, "ok"))


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_listen(serve: Callable[..., MetricsServer]) -> None:
    server = serve(Metrics(), listen="[::1]:0")
    conn = http.client.HTTPConnection("::1", server.port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        assert b"recsync_backlog" in response.read()
    finally:
        conn.close()
