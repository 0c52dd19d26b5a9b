"""Alerts for incidents, not for every failure: one "problem" when shipping goes wrong and one
"recovered" when it is right again, sent by a command and/or a webhook.

An incident opens when uploads fail `after_failures` times in a row, when the oldest waiting
recording is older than `backlog_minutes`, when the destination is paused, or when retention
finds the spool's disk below `retention.min_free_percent` or a remote copy missing or
different (the recording is shipped again). While it stays
open nothing more is sent; when every condition clears, one "recovered" closes it.

The command is run as an argument list, never through a shell, with the alert in its
environment::

    RECSYNC_ALERT=problem|recovered  RECSYNC_ALERT_REASON=...  RECSYNC_ALERT_SINCE=<ISO time>
    RECSYNC_ALERT_HOST=<host name>

The webhook gets the same as a JSON POST::

    {"alert": "problem", "host": "pbx1", "reason": "...", "since": "2024-03-15T10:15:00+01:00"}

With several destinations each has its incidents: the reason begins with
"destination NAME: ", and RECSYNC_ALERT_DESTINATION / "destination" name it.

A failure to alert (command missing, non-zero, timed out; webhook down) is logged and never
raised: an alert must not be what stops the agent.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence

from agent import __version__
from agent.config import AlertsConfig
from agent.errors import AgentError
from agent.http import no_redirect_opener, where
from agent.log import kv

log = logging.getLogger(__name__)

PROBLEM = "problem"
RECOVERED = "recovered"
COMMAND_TIMEOUT = 30.0
WEBHOOK_TIMEOUT = 10.0
_SNIPPET = 200  # characters of a failed command's stderr kept in the log line

# The service's own systemd channel: a child must not ping the watchdog or claim READY.
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


Runner = Callable[[Sequence[str], Mapping[str, str]], None]
Poster = Callable[[str, bytes], None]


class AlertFailed(AgentError):
    """An alert could not be delivered."""


def run_command(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """The default runner: the argument list as it is (no shell, so nothing in the reason is
    ever interpreted), bounded in time, with no stdin to wait on."""
    import subprocess  # here: reading the config (AlertsConfig) must stay quick

    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            timeout=COMMAND_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,  # its chatter must not break our one-line-per-event log
        )
    except subprocess.TimeoutExpired:
        raise AlertFailed(f"no exit within {COMMAND_TIMEOUT:g} s (killed)") from None
    except OSError as exc:
        raise AlertFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        said = " ".join(done.stderr.decode("utf-8", "replace").split())[-_SNIPPET:]
        raise AlertFailed(f"exit status {done.returncode}" + (f": {said}" if said else ""))


def post_json(url: str, payload: bytes) -> None:
    """The default poster: one JSON POST; any answer but 2xx is a failure."""
    import http.client
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", "User-Agent": f"recsync/{__version__}"}
    # S310: AlertsConfig admits http(s) URLs only.
    request = urllib.request.Request(url, payload, headers, method="POST")  # noqa: S310
    try:
        with no_redirect_opener().open(request, timeout=WEBHOOK_TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            raise AlertFailed(f"HTTP {exc.code} {exc.reason}".rstrip()) from None
    except urllib.error.URLError as exc:
        raise AlertFailed(str(exc.reason)) from None
    except TimeoutError:
        raise AlertFailed(f"no answer within {WEBHOOK_TIMEOUT:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise AlertFailed(str(exc) or type(exc).__name__) from None


def _clean(text: str) -> str:
    # One line, and no NUL, which an environment variable cannot hold.
    return " ".join(text.replace("\0", " ").splitlines())


def iso(timestamp: float) -> str:
    """Local time with its UTC offset: readable by the admin, unambiguous for a script."""
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


class Alerts:
    """Turns each loop pass's health into at most one alert per incident change.

    `observe` is called from the main loop with `now` (epoch seconds); alerts are sent
    synchronously, so one transition can take up to COMMAND_TIMEOUT + WEBHOOK_TIMEOUT.
    """

    def __init__(
        self,
        settings: AlertsConfig,
        *,
        run: Runner | None = None,
        post: Poster | None = None,
        destination: str | None = None,
    ) -> None:
        self.settings = settings
        self.destination = destination  # named where there are several
        self._run = run or run_command
        self._post = post or post_json
        self._since: float | None = None
        self._reason = ""

    @property
    def open_since(self) -> float | None:
        """When the open incident started, None when there is none."""
        return self._since

    @property
    def reason(self) -> str | None:
        """Why the open incident opened, None when there is none."""
        return self._reason if self._since is not None else None

    def observe(
        self,
        *,
        now: float,
        consecutive_failures: int,
        oldest_pending_seconds: float | None,
        destination: str,
        reason: str | None,
        retention: str | None = None,
    ) -> None:
        """Open, keep or close the incident; `reason` is the last error or the pause reason,
        `retention` what the last retention pass found wrong (low disk, re-queued copies)."""
        problem = self._problem(consecutive_failures, oldest_pending_seconds, destination, reason)
        if retention:
            problem = _clean(f"{problem}; {retention}" if problem else retention)
        if problem is not None and self.destination is not None:
            problem = f"destination {self.destination}: {problem}"
        if problem is not None and self._since is None:
            self._since, self._reason = now, problem
            log.warning(kv("incident-opened", reason=problem, since=iso(now)))
            self._send(PROBLEM)
        elif problem is None and self._since is not None:
            log.warning(kv("incident-closed", reason=self._reason, since=iso(self._since)))
            self._send(RECOVERED)
            self._since, self._reason = None, ""

    def _problem(
        self,
        failures: int,
        oldest: float | None,
        destination: str,
        reason: str | None,
    ) -> str | None:
        """What is wrong, in one line, or None when nothing is."""
        parts = []
        if destination == "paused":
            parts.append("destination paused")
        if failures >= self.settings.after_failures:
            parts.append(f"{failures} uploads failed in a row")
        limit = self.settings.backlog_minutes
        if oldest is not None and oldest > limit * 60:
            parts.append(f"oldest recording waiting {oldest / 60:.0f} min (limit {limit:g} min)")
        if not parts:
            return None
        text = "; ".join(parts)
        return _clean(f"{text}: {reason}" if reason else text)

    def _send(self, alert: str) -> None:
        assert self._since is not None
        since, host = iso(self._since), socket.gethostname()
        command, webhook = self.settings.command, self.settings.webhook
        if command is not None:
            env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
            env.update(
                RECSYNC_ALERT=alert,
                RECSYNC_ALERT_REASON=self._reason,
                RECSYNC_ALERT_SINCE=since,
                RECSYNC_ALERT_HOST=host,
            )
            if self.destination is not None:
                env["RECSYNC_ALERT_DESTINATION"] = self.destination
            self._deliver(alert, "command", command[0], lambda: self._run(command, env))
        if webhook is not None:
            fields = {"alert": alert, "reason": self._reason, "since": since, "host": host}
            if self.destination is not None:
                fields["destination"] = self.destination
            payload = json.dumps(
                fields,
                sort_keys=True,
                ensure_ascii=False,
            ).encode("utf-8", "backslashreplace")
            self._deliver(alert, "webhook", where(webhook), lambda: self._post(webhook, payload))

    def _deliver(self, alert: str, channel: str, target: str, send: Callable[[], None]) -> None:
        try:
            send()
        # Anything, an injected runner's error included: a failed alert is logged, and the
        # agent goes on shipping.
        except Exception as exc:
            log.error(
                kv("alert-failed", alert=alert, channel=channel, to=target, error=_clean(str(exc)))
            )
        else:
            log.info(kv("alert-sent", alert=alert, channel=channel, to=target))
