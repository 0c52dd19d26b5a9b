"""Alerts: one per incident and one on recovery, by a real command and a real HTTP server."""

from __future__ import annotations

import datetime
import json
import logging
import socket
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from agent import alerts as alerts_module
from agent.alerts import Alerts, iso
from agent.config import AlertsConfig, from_dict
from agent.errors import ConfigError
from tests.support.crm import CrmServer

T0 = 1_710_512_345.0


class Recorder:
    """A fake runner and poster: each call is kept; `fail` makes the next ones raise."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[str], dict[str, str]]] = []
        self.posts: list[tuple[str, dict[str, object]]] = []
        self.fail: Exception | None = None

    def run(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.runs.append((list(argv), dict(env)))
        if self.fail is not None:
            raise self.fail

    def post(self, url: str, payload: bytes) -> None:
        self.posts.append((url, json.loads(payload)))
        if self.fail is not None:
            raise self.fail

    def alerts(self) -> list[tuple[str, str]]:
        """(RECSYNC_ALERT, RECSYNC_ALERT_REASON) of each command run."""
        return [(env["RECSYNC_ALERT"], env["RECSYNC_ALERT_REASON"]) for _, env in self.runs]


def settings(**overrides: object) -> AlertsConfig:
    values: dict[str, object] = {
        "command": ("/usr/local/bin/page-admin", "--urgent"),
        "webhook": "https://alerts.example.com/hook?token=t0p",
        "after_failures": 5,
        "backlog_minutes": 60.0,
    }
    values.update(overrides)
    return AlertsConfig(**values)  # type: ignore[arg-type]


def healthy(alerts: Alerts, now: float) -> None:
    alerts.observe(
        now=now, consecutive_failures=0, oldest_pending_seconds=12.0, destination="ok", reason=None
    )


def burst(alerts: Alerts, now: float) -> None:
    alerts.observe(
        now=now, consecutive_failures=5, oldest_pending_seconds=None, destination="ok", reason=None
    )


def paused(alerts: Alerts, now: float, reason: str) -> None:
    alerts.observe(
        now=now,
        consecutive_failures=0,
        oldest_pending_seconds=None,
        destination="paused",
        reason=reason,
    )


# --- one incident, one recovery --------------------------------------------------------------


def test_a_failure_burst_opens_one_incident_and_recovery_closes_it() -> None:
    fake = Recorder()
    alerts = Alerts(settings(), run=fake.run, post=fake.post)
    healthy(alerts, T0)
    for n in range(1, 21):  # below the threshold nothing; from 5 on, one incident
        alerts.observe(
            now=T0 + n,
            consecutive_failures=n,
            oldest_pending_seconds=30.0,
            destination="failing",
            reason="connection reset",
        )
    assert fake.alerts() == [("problem", "5 uploads failed in a row: connection reset")]
    assert alerts.open_since == T0 + 5
    for n in range(30, 40):
        healthy(alerts, T0 + n)
    assert fake.alerts() == [
        ("problem", "5 uploads failed in a row: connection reset"),
        ("recovered", "5 uploads failed in a row: connection reset"),
    ]
    assert alerts.open_since is None and alerts.reason is None
    # The recovery names when the incident began, not when it ended.
    assert [env["RECSYNC_ALERT_SINCE"] for _, env in fake.runs] == [iso(T0 + 5)] * 2
    assert [body["alert"] for _, body in fake.posts] == ["problem", "recovered"]


def test_a_paused_destination_opens_one_incident() -> None:
    fake = Recorder()
    alerts = Alerts(settings(), run=fake.run, post=fake.post)
    for n in range(5):
        alerts.observe(
            now=T0 + n * 30,
            consecutive_failures=0,
            oldest_pending_seconds=None,
            destination="paused",
            reason="disk full",
        )
    assert fake.alerts() == [("problem", "destination paused: disk full")]
    healthy(alerts, T0 + 600)
    assert fake.alerts()[1:] == [("recovered", "destination paused: disk full")]


def test_a_stale_backlog_opens_one_incident() -> None:
    fake = Recorder()
    alerts = Alerts(settings(backlog_minutes=60), run=fake.run, post=fake.post)
    for age in (59 * 60, 3600, 3601, 4000, 9000):  # "older than": 3600 s exactly is not
        alerts.observe(
            now=T0 + age,
            consecutive_failures=0,
            oldest_pending_seconds=float(age),
            destination="ok",
            reason=None,
        )
    assert fake.alerts() == [("problem", "oldest recording waiting 60 min (limit 60 min)")]
    assert alerts.open_since == T0 + 3601


def test_the_incident_stays_open_until_every_condition_clears() -> None:
    fake = Recorder()
    alerts = Alerts(settings(after_failures=3), run=fake.run, post=fake.post)
    alerts.observe(
        now=T0,
        consecutive_failures=3,
        oldest_pending_seconds=4000.0,
        destination="paused",
        reason="permission denied",
    )
    reason = (
        "destination paused; 3 uploads failed in a row;"
        " oldest recording waiting 67 min (limit 60 min): permission denied"
    )
    assert fake.alerts() == [("problem", reason)]
    # The destination is back but the backlog is still old: still the same incident.
    alerts.observe(
        now=T0 + 60,
        consecutive_failures=0,
        oldest_pending_seconds=4060.0,
        destination="ok",
        reason=None,
    )
    assert len(fake.runs) == 1
    healthy(alerts, T0 + 120)
    assert fake.alerts() == [("problem", reason), ("recovered", reason)]
    # A new burst is a new incident.
    alerts.observe(
        now=T0 + 500,
        consecutive_failures=3,
        oldest_pending_seconds=None,
        destination="failing",
        reason=None,
    )
    assert fake.alerts()[2:] == [("problem", "3 uploads failed in a row")]


def test_the_command_environment_and_the_webhook_body() -> None:
    fake = Recorder()
    alerts = Alerts(settings(), run=fake.run, post=fake.post)
    alerts.observe(
        now=T0,
        consecutive_failures=0,
        oldest_pending_seconds=None,
        destination="paused",
        reason="host key\nchanged\0",
    )
    [(argv, env)] = fake.runs
    assert argv == ["/usr/local/bin/page-admin", "--urgent"]
    assert env["RECSYNC_ALERT"] == "problem"
    assert env["RECSYNC_ALERT_REASON"] == "destination paused: host key changed "
    assert env["RECSYNC_ALERT_HOST"] == socket.gethostname()
    since = datetime.datetime.fromisoformat(env["RECSYNC_ALERT_SINCE"])
    assert since.tzinfo is not None and since.timestamp() == T0
    [(url, body)] = fake.posts
    assert url == "https://alerts.example.com/hook?token=t0p"
    assert body == {
        "alert": "problem",
        "reason": "destination paused: host key changed ",
        "since": env["RECSYNC_ALERT_SINCE"],
        "host": socket.gethostname(),
    }


def test_one_of_several_destinations_is_named_in_every_channel() -> None:
    fake = Recorder()
    alerts = Alerts(settings(), run=fake.run, post=fake.post, destination="archive")
    alerts.observe(
        now=T0,
        consecutive_failures=0,
        oldest_pending_seconds=None,
        destination="paused",
        reason="disk full",
    )
    [(_, env)] = fake.runs
    assert env["RECSYNC_ALERT_DESTINATION"] == "archive"
    assert env["RECSYNC_ALERT_REASON"] == "destination archive: destination paused: disk full"
    [(_, body)] = fake.posts
    assert body["destination"] == "archive"
    assert body["reason"] == env["RECSYNC_ALERT_REASON"]


def test_the_command_does_not_inherit_the_systemd_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("RECSYNC_TEST_KEPT", "yes")
    fake = Recorder()
    alerts = Alerts(settings(webhook=None), run=fake.run, post=fake.post)
    alerts.observe(
        now=T0, consecutive_failures=9, oldest_pending_seconds=None, destination="ok", reason=None
    )
    [(_, env)] = fake.runs
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
    assert env["RECSYNC_TEST_KEPT"] == "yes"
    assert fake.posts == []


def test_without_a_command_or_webhook_incidents_are_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerts = Alerts(settings(command=None, webhook=None))
    with caplog.at_level(logging.INFO, logger="agent.alerts"):
        burst(alerts, T0)
        healthy(alerts, T0 + 1)
    assert [m.split()[0] for m in caplog.messages] == [
        "event=incident-opened",
        "event=incident-closed",
    ]


# --- the real command ------------------------------------------------------------------------


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "alert.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_default_runner_runs_the_command_and_nothing_in_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "alerts.log"
    victim = tmp_path / "victim"
    victim.mkdir()
    pwned = tmp_path / "pwned"
    append = 'printf "%s|%s\\n" "$RECSYNC_ALERT" "$RECSYNC_ALERT_REASON" >>"$1"\n'
    command = script(tmp_path, append)
    alerts = Alerts(settings(command=(str(command), str(out)), webhook=None))
    hostile = f"$(touch {pwned}) `touch {pwned}`; rm -rf {victim} && echo '\"' | cat"
    alerts.observe(
        now=T0,
        consecutive_failures=0,
        oldest_pending_seconds=None,
        destination="paused",
        reason=hostile,
    )
    healthy(alerts, T0 + 30)
    assert out.read_text().splitlines() == [
        f"problem|destination paused: {hostile}",
        f"recovered|destination paused: {hostile}",
    ]
    assert not pwned.exists()
    assert victim.is_dir()


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (("/nonexistent/page-admin",), "cannot run /nonexistent/page-admin: No such file"),
        (("sh", "-c", "echo 'no route\nto pager' >&2; exit 3"), "exit status 3: no route to pager"),
        (("sleep", "5"), "no exit within 0.2 s (killed)"),
    ],
)
def test_a_failing_command_is_logged_not_raised(
    command: tuple[str, ...],
    error: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(alerts_module, "COMMAND_TIMEOUT", 0.2)
    alerts = Alerts(settings(command=command, webhook=None))
    with caplog.at_level(logging.ERROR, logger="agent.alerts"):
        burst(alerts, T0)
    [line] = caplog.messages
    assert line.startswith("event=alert-failed alert=problem channel=command ")
    assert error in line
    assert alerts.open_since == T0  # the incident is open all the same: no retry storm


def test_an_injected_runner_that_raises_does_not_stop_the_webhook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = Recorder()
    fake.fail = RuntimeError("boom")
    alerts = Alerts(settings(), run=fake.run, post=fake.post)
    with caplog.at_level(logging.ERROR, logger="agent.alerts"):
        burst(alerts, T0)
    assert len(fake.runs) == 1 and len(fake.posts) == 1
    assert len(caplog.messages) == 2
    assert "token" not in caplog.text  # the webhook is logged without its query


# --- the real webhook ------------------------------------------------------------------------


def test_the_default_poster_reaches_a_real_server(crm: CrmServer) -> None:
    alerts = Alerts(settings(command=None, webhook=crm.base + "/alerts?token=abc"))
    paused(alerts, T0, "x")
    healthy(alerts, T0 + 60)
    got = crm.wait_for(2)
    assert [r.path for r in got] == ["/alerts?token=abc"] * 2
    assert all(r.headers["content-type"] == "application/json" for r in got)
    bodies = [json.loads(r.body) for r in got]
    assert bodies == [
        {
            "alert": alert,
            "reason": "destination paused: x",
            "since": iso(T0),
            "host": socket.gethostname(),
        }
        for alert in ("problem", "recovered")
    ]


@pytest.mark.parametrize(
    ("status", "error"), [(500, "HTTP 500 Internal Server Error"), (302, "HTTP 302 Found")]
)
def test_a_refusing_webhook_is_logged_not_raised(
    crm: CrmServer, status: int, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    crm.answer(status, headers={"Location": crm.base + "/elsewhere"})
    alerts = Alerts(settings(command=None, webhook=crm.base + "/alerts"))
    with caplog.at_level(logging.ERROR, logger="agent.alerts"):
        burst(alerts, T0)
    assert len(crm.wait_for(1)) == 1  # a redirect is not followed
    [line] = caplog.messages
    assert line.startswith("event=alert-failed alert=problem channel=webhook ")
    assert error in line


def test_a_webhook_down_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    alerts = Alerts(settings(command=None, webhook=f"http://127.0.0.1:{port}/alerts"))
    with caplog.at_level(logging.ERROR, logger="agent.alerts"):
        burst(alerts, T0)
    [line] = caplog.messages
    assert "channel=webhook" in line and "refused" in line.lower()


# --- settings --------------------------------------------------------------------------------


DESTINATION = {"destination": {"type": "local", "root": "dest"}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"command": []}, "alerts.command: expected a list: the program, then its arguments"),
        ({"command": [""]}, "alerts.command: the program name is empty"),
        ({"webhook": "file:///etc/passwd"}, "alerts.webhook: expected an http:// or https://"),
        ({"webhook": "https://"}, "alerts.webhook: expected an http:// or https:// URL with a"),
        ({"after_failures": 0}, "alerts.after_failures"),
        ({"backlog_minutes": 0}, "alerts.backlog_minutes"),
    ],
)
def test_the_config_refuses_nonsense_naming_the_key(
    overrides: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        from_dict({"alerts": overrides, **DESTINATION}, base=tmp_path)
    assert str(caught.value).startswith(message)


def test_a_webhook_token_never_shows_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        from_dict(
            {"alerts": {"webhook": "https://:9/hook?token=s3cret"}, **DESTINATION}, base=tmp_path
        )
    assert "s3cret" not in str(caught.value)


def test_a_command_list_becomes_a_tuple(tmp_path: Path) -> None:
    config = from_dict({"alerts": {"command": ["notify", "-x"]}, **DESTINATION}, base=tmp_path)
    assert config.alerts.command == ("notify", "-x")
