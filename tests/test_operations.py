"""A real `recsync run` as systemd and Prometheus see it: sd_notify messages on a socket,
/metrics and /healthz scraped over HTTP while it ships."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Site
from tests.support.daemon import DEADLINE, wait_for
from tests.support.mixmonitor import write_recording
from tests.support.servers import free_port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our own server
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Systemd:
    """The NOTIFY_SOCKET end: what the agent tells systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(DEADLINE)
        self.messages: list[str] = []

    def expect(self, text: str) -> None:
        while not any(text in m for m in self.messages):
            self.messages.append(self.sock.recv(4096).decode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    listener = Systemd(tmp_path / "notify.sock")
    yield listener
    listener.close()


@pytest.mark.slow
def test_systemd_and_prometheus_see_a_real_run(site: Site, systemd: Systemd) -> None:
    port = free_port()
    config = site.write_config(metrics={"listen": f"127.0.0.1:{port}"})
    today = datetime.now().replace(microsecond=0)
    (site.spool / f"{today:%Y/%m/%d}").mkdir(parents=True)
    env = os.environ | {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "1000000"}
    with (site.root / "agent.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(config), "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        systemd.expect("READY=1")
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, "/healthz to answer 200")

        name = f"out-18005551234-1001-{today:%Y%m%d-%H%M%S}-{int(today.timestamp())}.1.wav"
        write_recording(site.spool_file(f"{today:%Y/%m/%d}/{name}"), seconds=1)
        wait_for(
            lambda: "recsync_shipped_total 1.0" in get(f"{base}/metrics")[1],
            "the metrics to count the shipped recording",
        )
        metrics = get(f"{base}/metrics")[1]
        assert "recsync_upload_latency_seconds_count 1.0" in metrics
        assert "recsync_destination_up 1.0" in metrics
        assert get(f"{base}/nothing")[0] == 404
        systemd.expect("WATCHDOG=1")  # the main loop pings at half of WatchdogSec
        systemd.expect("STATUS=")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
        systemd.expect("STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
