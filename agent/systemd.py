"""systemd's notify protocol (`Type=notify`, `WatchdogSec=`) without libsystemd.

The protocol is one datagram of `KEY=value` lines sent to the AF_UNIX socket named by
`NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Outside systemd the
variable is unset and every method does nothing, so the daemon calls them unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from agent.log import kv

log = logging.getLogger(__name__)

SEND_TIMEOUT = 2.0  # a wedged systemd must not stall the loop; libsystemd blocks instead


def _one_line(text: str) -> str:
    # A newline would start another KEY=value assignment in the datagram.
    return " ".join(text.splitlines())


def _address(value: str) -> str | None:
    """The socket address for NOTIFY_SOCKET, or None for a form we do not speak (vsock:)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # Linux abstract namespace: a leading NUL byte
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC in seconds (sd_watchdog_enabled's advice), or None when the
    watchdog is off or meant for another process (a child that inherited the variables)."""
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Notifier:
    """Tells systemd the agent is ready, what it is doing, that it is alive, that it stops.

    Send errors are logged at debug level and swallowed: systemd going away (or a full
    socket buffer) must never crash the agent.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.enabled = False
        self.watchdog_interval: float | None = None
        self._sock: socket.socket | None = None
        self._address = ""
        self._last_ping: float | None = None
        raw = environ.get("NOTIFY_SOCKET", "")
        if not raw:
            return
        address = _address(raw)
        if address is None:
            log.debug(kv("sd-notify-unsupported", socket=raw))
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError as exc:
            log.debug(kv("sd-notify-failed", error=exc.strerror or exc))
            return
        sock.settimeout(SEND_TIMEOUT)
        self._sock, self._address, self.enabled = sock, address, True
        self.watchdog_interval = _watchdog_interval(environ)

    def __repr__(self) -> str:
        return f"Notifier(enabled={self.enabled}, watchdog_interval={self.watchdog_interval})"

    def ready(self, status: str) -> None:
        """Start-up is over (recovery done): systemd's `start` returns, dependents start."""
        self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """The one-line summary `systemctl status` shows."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self, now: float) -> None:
        """Call from every loop pass: pings at most once per `watchdog_interval`."""
        if not self.enabled or self.watchdog_interval is None:
            return
        last = self._last_ping
        # A wall clock set back (now < last) pings at once rather than going silent
        # until it catches up, which would get the agent killed.
        if last is not None and 0 <= now - last < self.watchdog_interval:
            return
        self._last_ping = now
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown has begun: systemd waits for it instead of calling the agent hung."""
        self._send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self.enabled = None, False

    def _send(self, message: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(message.encode("utf-8", "replace"), self._address)
        except OSError as exc:
            what = message.split("=", 1)[0]
            log.debug(kv("sd-notify-failed", message=what, error=exc.strerror or exc))
