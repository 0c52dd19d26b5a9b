"""sd_notify messages received on a real datagram socket, as systemd would receive them."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.systemd import Notifier


class Systemd:
    """The manager's end of NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # the NOTIFY_SOCKET value

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.name, **extra}

    def received(self) -> list[str]:
        """Every datagram waiting, in order."""
        got = []
        while True:
            try:
                got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return got


@pytest.fixture
def systemd() -> Iterator[Systemd]:
    # A short folder of our own: AF_UNIX paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sd-", dir="/tmp") as folder:
        path = Path(folder) / "notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with sock:
            sock.bind(str(path))
            sock.setblocking(False)
            yield Systemd(sock, str(path))


@pytest.fixture
def abstract_systemd() -> Iterator[Systemd]:
    name = f"recsync-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        yield Systemd(sock, "@" + name)


def test_the_exact_messages_on_a_path_socket(systemd: Systemd) -> None:
    notifier = Notifier(systemd.env())
    assert notifier.enabled
    notifier.ready("recovered 3 rows, scanning the spool")
    notifier.status("12 pending\noldest 5 min\r\nlast upload 10:15")
    notifier.stopping()
    notifier.close()
    assert systemd.received() == [
        "READY=1\nSTATUS=recovered 3 rows, scanning the spool",
        "STATUS=12 pending oldest 5 min last upload 10:15",
        "STOPPING=1",
    ]


def test_an_abstract_socket(abstract_systemd: Systemd) -> None:
    notifier = Notifier(abstract_systemd.env())
    notifier.ready("up")
    notifier.status("shipping")
    notifier.close()
    assert abstract_systemd.received() == ["READY=1\nSTATUS=up", "STATUS=shipping"]


def test_the_watchdog_pings_at_most_once_per_half_period(systemd: Systemd) -> None:
    notifier = Notifier(systemd.env(WATCHDOG_USEC="20000000", WATCHDOG_PID=str(os.getpid())))
    assert notifier.watchdog_interval == 10.0
    for now in (1000.0, 1001.0, 1009.9, 1010.0, 1015.0, 1020.5, 1020.6):
        notifier.watchdog(now)
    notifier.close()
    assert systemd.received() == ["WATCHDOG=1"] * 3  # at 1000, 1010 and 1020.5


def test_the_watchdog_without_a_pid_is_ours(systemd: Systemd) -> None:
    notifier = Notifier(systemd.env(WATCHDOG_USEC="1000000"))
    assert notifier.watchdog_interval == 0.5
    notifier.watchdog(5.0)
    notifier.close()
    assert systemd.received() == ["WATCHDOG=1"]


def test_a_clock_set_back_pings_at_once(systemd: Systemd) -> None:
    notifier = Notifier(systemd.env(WATCHDOG_USEC="20000000"))
    notifier.watchdog(5000.0)
    notifier.watchdog(1000.0)  # the wall clock jumped back an hour
    notifier.close()
    assert systemd.received() == ["WATCHDOG=1", "WATCHDOG=1"]


@pytest.mark.parametrize(
    "extra",
    [
        {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)},  # another process's
        {},  # WatchdogSec= not set
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "not-a-pid"},
    ],
)
def test_no_watchdog(systemd: Systemd, extra: dict[str, str]) -> None:
    notifier = Notifier(systemd.env(**extra))
    assert notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.watchdog(1000.0)
    notifier.status("still here")
    notifier.close()
    assert systemd.received() == ["STATUS=still here"]


@pytest.mark.parametrize(
    "environ",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}, {"WATCHDOG_USEC": "2000000"}],
)
def test_outside_systemd_every_call_does_nothing(environ: dict[str, str]) -> None:
    notifier = Notifier(environ)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("up")
    notifier.status("x")
    notifier.watchdog(1.0)
    notifier.stopping()
    notifier.close()
    notifier.close()


def test_the_default_environment_is_the_process_one(
    systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.name)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    notifier = Notifier()
    notifier.ready("up")
    notifier.close()
    assert systemd.received() == ["READY=1\nSTATUS=up"]


def test_systemd_gone_is_one_debug_line_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    with tempfile.TemporaryDirectory(prefix="sd-", dir="/tmp") as folder:
        notifier = Notifier({"NOTIFY_SOCKET": f"{folder}/nobody-listens"})
        assert notifier.enabled
        with caplog.at_level(logging.DEBUG, logger="agent.systemd"):
            notifier.status("anyone?")
        notifier.close()
    [line] = caplog.messages
    assert line.startswith("event=sd-notify-failed message=STATUS ")


def test_after_close_nothing_is_sent(systemd: Systemd) -> None:
    notifier = Notifier(systemd.env(WATCHDOG_USEC="2000000"))
    notifier.close()
    assert not notifier.enabled
    notifier.ready("late")
    notifier.watchdog(1.0)
    assert systemd.received() == []
