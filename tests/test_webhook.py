"""The CRM webhook against a real local HTTP server that records what it receives."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from agent import __version__
from agent.errors import PermanentError, TransientError
from agent.publish import webhook
from agent.publish.webhook import (
    EVENT_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    CrmRefused,
    CrmUnavailable,
    Webhook,
    body,
    retry_delay,
    signature,
    verify,
)
from tests.support.crm import CrmServer

SECRET = b"s3cr3t-hook-key"
KEY = "1710512345.123:recording.shipped:1"
RECORDING = {
    "file": "2024/03/15/in-200-0612345678-20240315-101500-1710512345.123.mp3",
    "caller_name": "Dupont",
    "duration": 42,
    "cdr": "found",
}


def hook(crm: CrmServer, *, secret: bytes | None = SECRET, timeout: float = 5.0) -> Webhook:
    return Webhook(url=crm.base + "/hooks/recsync?token=q-token", secret=secret, timeout=timeout)


def shipped(recording: dict[str, object] | None = None) -> bytes:
    return body(webhook.SHIPPED, KEY, recording or RECORDING)


# --- one signed POST ---------------------------------------------------------------------


def test_one_post_per_send_with_the_headers_and_the_body(crm: CrmServer) -> None:
    payload = shipped()
    hook(crm).send(payload, event=webhook.SHIPPED, key=KEY)

    [got] = crm.wait_for(1)
    assert got.method == "POST"
    assert got.path == "/hooks/recsync?token=q-token"
    assert got.body == payload
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == f"recsync/{__version__}"
    assert got.headers[EVENT_HEADER.lower()] == "recording.shipped"
    assert got.headers[ID_HEADER.lower()] == KEY
    assert got.headers["content-length"] == str(len(payload))
    assert json.loads(got.body) == {"event": "recording.shipped", "id": KEY, "recording": RECORDING}
    assert verify(SECRET, got.body, got.headers[SIGNATURE_HEADER.lower()])


def test_each_send_is_one_request(crm: CrmServer) -> None:
    sender = hook(crm)
    for version in (1, 2):
        key = f"1710512345.123:recording.updated:{version}"
        sender.send(body(webhook.UPDATED, key, RECORDING), event=webhook.UPDATED, key=key)
    got = crm.wait_for(2)
    assert len(got) == 2
    assert [r.headers[ID_HEADER.lower()] for r in got] == [
        "1710512345.123:recording.updated:1",
        "1710512345.123:recording.updated:2",
    ]


def test_the_signature_fails_with_another_secret_or_a_changed_body(crm: CrmServer) -> None:
    hook(crm).send(shipped(), event=webhook.SHIPPED, key=KEY)
    [got] = crm.wait_for(1)
    header = got.headers[SIGNATURE_HEADER.lower()]

    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
    assert header == signature(SECRET, got.body)
    assert verify(SECRET, got.body, f" {header}\n")  # stray whitespace from a framework
    assert not verify(b"another-secret", got.body, header)
    assert not verify(SECRET, got.body.replace(b"Dupont", b"Durand"), header)
    assert not verify(SECRET, got.body + b" ", header)
    assert not verify(SECRET, got.body, header.upper())
    assert not verify(SECRET, got.body, "")
    assert not verify(SECRET, got.body, "sha256=\u00e9")  # garbage is False, not an exception


def test_no_secret_sends_no_signature_header(crm: CrmServer) -> None:
    hook(crm, secret=None).send(shipped(), event=webhook.SHIPPED, key=KEY)
    [got] = crm.wait_for(1)
    assert SIGNATURE_HEADER.lower() not in got.headers
    assert got.headers[ID_HEADER.lower()] == KEY


def test_a_hostile_recording_survives_the_round_trip(crm: CrmServer) -> None:
    recording: dict[str, object] = {
        "caller_name": "<script>alert(1)</script><img src=x onerror=alert(2)>",
        "caller_number": "\x00\x07\x1b[31m\r\nX-Injected: yes\u2028\u2029\"'\\",
        "dst": "Zoë 電話 \U0001f4de",
        "original": "odd-\udcff-name.wav",  # a non-UTF-8 file name, decoded with surrogateescape
        "did": "A" * 2048,
        "duration": None,
    }
    payload = body(webhook.SHIPPED, KEY, recording)
    payload.decode("utf-8")  # strict: the body is valid UTF-8
    hook(crm).send(payload, event=webhook.SHIPPED, key=KEY)

    [got] = crm.wait_for(1)
    assert json.loads(got.body.decode("utf-8"))["recording"] == recording
    assert verify(SECRET, got.body, got.headers[SIGNATURE_HEADER.lower()])
    assert "x-injected" not in got.headers


def test_the_body_is_compact_sorted_utf8() -> None:
    payload = body("recording.shipped", "k:1", {"b": 1, "a": "é", "c": None})
    assert payload == (
        b'{"event":"recording.shipped","id":"k:1","recording":{"a":"\xc3\xa9","b":1,"c":null}}'
    )
    linked = body("recording.shipped", "k:1", {"a": 1}, download_url="https://s3/x?y=1&z")
    assert linked == (
        b'{"download_url":"https://s3/x?y=1&z","event":"recording.shipped","id":"k:1",'
        b'"recording":{"a":1}}'
    )


# --- how answers are classified ----------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_busy_or_broken_crm_is_transient(crm: CrmServer, status: int) -> None:
    crm.answer(status)
    with pytest.raises(TransientError) as caught:
        hook(crm).send(shipped(), event=webhook.SHIPPED, key=KEY)
    assert isinstance(caught.value, CrmUnavailable)
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert "told to fail" in str(caught.value)  # the CRM's own words, for the admin
    assert SECRET.decode() not in str(caught.value)
    assert "q-token" not in str(caught.value)
    assert len(crm.wait_for(1)) == 1


def test_retry_after_is_passed_on(crm: CrmServer) -> None:
    crm.answer(429, headers={"Retry-After": "120"})
    with pytest.raises(CrmUnavailable) as caught:
        hook(crm).send(shipped(), event=webhook.SHIPPED, key=KEY)
    assert caught.value.retry_after == 120.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 413, 422])
def test_a_refused_event_is_permanent(crm: CrmServer, status: int) -> None:
    crm.answer(status)
    with pytest.raises(PermanentError) as caught:
        hook(crm).send(shipped(), event=webhook.SHIPPED, key=KEY)
    assert not isinstance(caught.value, TransientError)
    assert isinstance(caught.value, CrmRefused)
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert SECRET.decode() not in str(caught.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(crm: CrmServer, status: int) -> None:
    location = crm.base + "/elsewhere?token=moved-token"
    crm.answer(status, headers={"Location": location})
    with pytest.raises(PermanentError) as caught:
        hook(crm).send(shipped(), event=webhook.SHIPPED, key=KEY)
    message = str(caught.value)
    assert f"HTTP {status}" in message
    assert crm.base + "/elsewhere" in message  # names where it points...
    assert "moved-token" not in message  # ...without a token from the query
    # urllib follows a redirect inside the same call: had it, the server would have it by now.
    assert [r.path for r in crm.received] == ["/hooks/recsync?token=q-token"]


def test_a_crm_that_does_not_answer_in_time_is_transient(crm: CrmServer) -> None:
    crm.hang()
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"no answer within 0\.2 s"):
        hook(crm, timeout=0.2).send(shipped(), event=webhook.SHIPPED, key=KEY)
    assert time.monotonic() - started < 5
    assert len(crm.wait_for(1)) == 1


def test_nobody_listening_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = Webhook(url=f"http://127.0.0.1:{port}/hook", secret=SECRET, timeout=2)
    with pytest.raises(CrmUnavailable) as caught:
        sender.send(shipped(), event=webhook.SHIPPED, key=KEY)
    assert caught.value.status is None
    assert "refused" in str(caught.value).lower()


def test_a_crm_failing_for_a_while_gets_the_same_bytes_later(crm: CrmServer) -> None:
    crm.answer(500, times=3)
    sender, payload = hook(crm), shipped()
    for _ in range(3):
        with pytest.raises(TransientError):
            sender.send(payload, event=webhook.SHIPPED, key=KEY)
    sender.send(payload, event=webhook.SHIPPED, key=KEY)

    got = crm.wait_for(4)
    assert len(got) == 4
    assert {r.body for r in got} == {payload}
    assert {r.headers[ID_HEADER.lower()] for r in got} == {KEY}
    assert {r.headers[SIGNATURE_HEADER.lower()] for r in got} == {signature(SECRET, payload)}


# --- secrets and arguments ---------------------------------------------------------------


def test_neither_repr_nor_logs_show_the_secret(
    crm: CrmServer, caplog: pytest.LogCaptureFixture
) -> None:
    sender = hook(crm)
    assert SECRET.decode() not in repr(sender)
    assert "q-token" not in repr(sender)
    assert repr(sender) == f"Webhook({crm.base}/hooks/recsync, signed=True, timeout=5)"

    with caplog.at_level(logging.DEBUG, logger="agent"):
        sender.send(shipped(), event=webhook.SHIPPED, key=KEY)
        crm.answer(500)
        with pytest.raises(TransientError):
            sender.send(shipped(), event=webhook.SHIPPED, key=KEY)
    assert "webhook-sent" in caplog.text
    assert SECRET.decode() not in caplog.text
    assert "q-token" not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "ftp://crm.example/hook",
        "file:///etc/passwd",
        "crm.example/hook",
        "http://",
        "https://user:password@crm.example/hook",
        "https://crm.example:port/hook",
        "https://crm.example/a hook",
        "https://crm.example/\u00e9",
        "",
    ],
)
def test_only_plain_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        Webhook(url=url, secret=SECRET, timeout=5)
    assert "password" not in str(caught.value)


def test_an_empty_secret_or_no_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        Webhook(url="https://crm.example/hook", secret=b"", timeout=5)
    with pytest.raises(ValueError, match="timeout"):
        Webhook(url="https://crm.example/hook", secret=SECRET, timeout=0)


@pytest.mark.parametrize("key", ["", "a\r\nX-Injected: 1", "with space", "\u00e9"])
def test_a_key_unfit_for_a_header_is_refused_before_sending(crm: CrmServer, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        hook(crm).send(shipped(), event=webhook.SHIPPED, key=key)
    assert crm.received == []


# --- backoff -----------------------------------------------------------------------------


def test_retry_delay_doubles_from_ten_seconds_up_to_an_hour() -> None:
    low = [retry_delay(n, rand=lambda: 0.0) for n in range(1, 12)]
    assert low[:4] == [10, 20, 40, 80]
    assert low == sorted(low)
    assert low[-1] == 3600
    assert retry_delay(0, rand=lambda: 0.0) == 10  # "no failure yet" waits like the first
    assert retry_delay(10**9, rand=lambda: 0.0) == 3600  # no overflow, no hang
    assert retry_delay(1, rand=lambda: 1.0) == pytest.approx(12)
    assert retry_delay(50, rand=lambda: 1.0) == pytest.approx(4320)


def test_retry_delay_jitters_within_twenty_percent() -> None:
    for attempts, base in ((1, 10.0), (3, 40.0), (30, 3600.0)):
        delays = {retry_delay(attempts) for _ in range(200)}
        assert all(base <= d <= base * 1.2 for d in delays)
        assert len(delays) > 1
