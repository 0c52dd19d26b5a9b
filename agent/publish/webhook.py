"""Tell a CRM about each recording: one signed JSON POST per event, standard library only.

Events are `recording.shipped` (the recording was published) and `recording.updated` (a late
CDR filled it in). The body is compact UTF-8 JSON with sorted keys::

    {"event":"recording.shipped","id":"<idempotency key>","recording":{<manifest entry>}}

With `webhook.presign_seconds` (an S3 destination) the body also has `"download_url"`: a
presigned GET URL of the recording, valid that long from the moment of sending (each
attempt signs a fresh one, so a retried event's link is fresh too).

Headers: `X-Recsync-Event` (the event), `X-Recsync-Delivery` (the idempotency key, the same
as the body's `id`) and, when a secret is configured, `X-Recsync-Signature:
sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>`.

For CRM authors. Verify the signature over the raw bytes of the body exactly as received
(never a re-serialised JSON), with a constant-time comparison, before parsing it::

    import hashlib, hmac
    def verified(secret: bytes, raw_body: bytes, header: str) -> bool:
        mac = hmac.new(secret, raw_body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(("sha256=" + mac).encode(), header.strip().encode())
    # if not verified(...): answer 401; else json.loads(raw_body)

Delivery is at least once: an event is retried until the CRM answers 2xx, so the same event
may arrive more than once (a 2xx lost on the way, a restart). Keep the `id` of each event
handled, and answer 2xx without doing the work again for an `id` already seen. A
`recording.updated` carries the whole entry as now known, not a difference. The signature
covers the body only: deduplicating on `id` is also what makes a replayed request harmless.

Answers: 2xx means accepted. 408, 429 and 5xx (and no answer) mean "try again later": the
agent retries with backoff for as long as it takes. Any other 4xx means "this event is
refused for good" and is not retried. Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent import __version__
from agent.backoff import backoff
from agent.config import WebhookConfig
from agent.errors import ConfigError, PermanentError, TransientError
from agent.http import no_redirect_opener, where
from agent.log import kv
from agent.secrets import read_secret

if TYPE_CHECKING:  # urllib.request and http.client load when a webhook is configured
    import urllib.error
    from email.message import Message

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Recsync-Signature"
EVENT_HEADER = "X-Recsync-Event"
ID_HEADER = "X-Recsync-Delivery"

SHIPPED = "recording.shipped"
UPDATED = "recording.updated"

FIRST_DELAY = 10.0
MAX_DELAY = 3600.0
JITTER = 0.2

_TOKEN = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII: safe as a header value
_URL = re.compile(r"^[\x21-\x7e]{1,2000}$")  # what http.client puts on the request line
_RETRYABLE = frozenset({408, 429})
_SNIPPET = 200  # characters of the CRM's error answer kept in the reason


class CrmUnavailable(TransientError):
    """The CRM did not take the event now (no answer, 408, 429, 5xx): retry later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class CrmRefused(PermanentError):
    """The CRM refused this event (a 4xx, or a redirect): retrying cannot help."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def body(
    event: str, key: str, recording: Mapping[str, object], *, download_url: str | None = None
) -> bytes:
    """The bytes to sign and send, made again at each attempt: the same but for a fresh
    `download_url` (a presigned link, when webhook.presign_seconds asks for one)."""
    payload: dict[str, object] = {"event": event, "id": key, "recording": dict(recording)}
    if download_url is not None:
        payload["download_url"] = download_url
    text = json.dumps(
        payload,
        separators=(",", ":"),
        sort_keys=True,
        ensure_ascii=False,
        allow_nan=False,
    )
    # A lone surrogate (a non-UTF-8 file name decoded with surrogateescape) cannot be UTF-8;
    # "backslashreplace" writes it as `\udcxx`, which inside a JSON string is its JSON escape.
    return text.encode("utf-8", "backslashreplace")


def signature(secret: bytes, payload: bytes) -> str:
    """The `X-Recsync-Signature` value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, payload, hashlib.sha256).hexdigest()


def verify(secret: bytes, payload: bytes, header: str) -> bool:
    """Whether `header` is the signature of `payload` (constant time), as a CRM checks it."""
    expected = signature(secret, payload).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


def retry_delay(attempts: int, *, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `attempts` failed deliveries: 10, 20, 40 ... capped at one hour,
    plus 0-20 % at random so that events failed together do not all come back together."""
    return backoff(attempts - 1, first=FIRST_DELAY, cap=MAX_DELAY, jitter=JITTER, rand=rand)


class Webhook:
    """The CRM's webhook endpoint. `send` makes one attempt; retries belong to the outbox."""

    def __init__(self, *, url: str, secret: bytes | None, timeout: float) -> None:
        if not _URL.match(url):
            raise ValueError("webhook URL must be printable ASCII (percent-encode the rest)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http:// or https:// with a host: {where(url)}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("webhook URL must not hold credentials: use the secret file")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(f"webhook URL has a bad port: {where(url)}") from None
        if secret is not None and not secret:
            raise ValueError("webhook secret is empty: unset the secret file to send unsigned")
        if not timeout > 0:
            raise ValueError(f"webhook timeout must be positive, not {timeout}")
        self.url = url
        self.where = where(url)
        self.timeout = float(timeout)
        self._secret = secret
        self._opener = no_redirect_opener()

    @property
    def signed(self) -> bool:
        return self._secret is not None

    def __repr__(self) -> str:  # never the secret, nor a token in the query string
        return f"Webhook({self.where}, signed={self.signed}, timeout={self.timeout:g})"

    def send(self, payload: bytes, *, event: str, key: str) -> None:
        """POST `payload` (from `body`) once. Returns on 2xx; raises CrmUnavailable (a
        TransientError) or CrmRefused (a PermanentError), whose messages never hold the
        secret. `key` must be the body's `id`."""
        import http.client
        import urllib.error
        import urllib.request

        for name, value in (("event", event), ("key", key)):
            if not _TOKEN.match(value):
                raise ValueError(f"webhook {name} must be 1-200 printable ASCII characters")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"recsync/{__version__}",
            EVENT_HEADER: event,
            ID_HEADER: key,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = signature(self._secret, payload)
        # S310: __init__ admits http(s) URLs only.
        request = urllib.request.Request(self.url, payload, headers, method="POST")  # noqa: S310
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._answer(exc) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        log.debug(
            kv(
                "webhook-sent",
                url=self.where,
                webhook_event=event,
                id=key,
                status=status,
                ms=round((time.monotonic() - started) * 1000),
            )
        )

    def _answer(self, exc: urllib.error.HTTPError) -> TransientError | PermanentError:
        """Our error for a non-2xx answer."""
        status = exc.code
        reason = f"webhook {self.where}: HTTP {status} {exc.reason}".rstrip()
        if 300 <= status < 400:
            location = exc.headers.get("Location")
            moved = where(location) if location else "no Location"
            return CrmRefused(f"{reason}, redirected to {moved} (not followed)", status=status)
        said = _snippet(exc)
        if said:
            reason = f"{reason}: {said}"
        if status in _RETRYABLE or status >= 500:
            return CrmUnavailable(reason, status=status, retry_after=_retry_after(exc.headers))
        return CrmRefused(reason, status=status)

    def _unreachable(self, cause: object) -> CrmUnavailable:
        """Our error for no answer at all (refused, reset, DNS, TLS, timeout)."""
        if isinstance(cause, TimeoutError):
            return CrmUnavailable(f"webhook {self.where}: no answer within {self.timeout:g} s")
        if isinstance(cause, OSError) and cause.strerror:
            text = cause.strerror
        else:
            text = str(cause) or type(cause).__name__
        return CrmUnavailable(f"webhook {self.where}: {_squash(text)}")


def _snippet(exc: urllib.error.HTTPError) -> str:
    """The start of the CRM's error answer (why it refused), on one line."""
    import http.client

    try:
        raw = exc.read(_SNIPPET * 4)
    except (OSError, http.client.HTTPException):
        return ""
    return _squash(raw.decode("utf-8", "replace"))


def _squash(text: str) -> str:
    return " ".join(text.split())[:_SNIPPET]


def _retry_after(headers: Message) -> float | None:
    """`Retry-After` in seconds when given as a number (its date form is rare; ignored)."""
    value = headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def open_webhook(config: WebhookConfig) -> Webhook | None:
    """The configured webhook, or None when `webhook.url` is not set."""
    if config.url is None:
        return None
    secret = read_secret(config.secret_file).encode() if config.secret_file else None
    if secret is not None and not secret:
        raise ConfigError(f"webhook.secret_file: {config.secret_file} is empty")
    try:
        return Webhook(url=config.url, secret=secret, timeout=config.timeout_seconds)
    except ValueError as exc:
        raise ConfigError(f"webhook.url: {exc}") from None
