"""Role credentials for S3: the container's (ECS task role, EKS pod identity) and the EC2
instance's (IMDSv2). Asked over stdlib http.client with 1 s timeouts, since a PBX on no
cloud has no metadata service and must not be held up; kept until a few minutes before
they expire; a place that failed or did not answer is asked again only after a minute.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Protocol
from urllib.parse import SplitResult, quote, urlsplit

from agent.log import kv
from agent.transport.s3client import Credentials

log = logging.getLogger(__name__)

TIMEOUT = 1.0  # seconds to connect, and for each read
REFRESH_BEFORE = 300.0  # seconds ahead of Expiration (EC2 offers new keys 5 min ahead)
RETRY_AFTER = 60.0  # seconds before a place that failed or did not answer is asked again
UNDATED_FOR = 3600.0  # seconds credentials without an Expiration are kept
ANSWER_MAX = 64 * 1024  # bytes read of an answer: credentials are a few hundred
CONTAINER_ENDPOINT = "http://169.254.170.2"
IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_ENDPOINT_IPV6 = "http://[fd00:ec2::254]"
IMDS_ROLES = "/latest/meta-data/iam/security-credentials/"
IMDS_TOKEN_TTL = "21600"  # noqa: S105 - seconds; a new token is asked for at each fetch
# Hosts a full container URI may name over plain http, as in the AWS SDKs (ECS, EKS pod
# identity): anywhere else the authorization token would cross a network in clear.
_PLAIN_HTTP_HOSTS = {"localhost", "169.254.170.2", "169.254.170.23", "fd00:ec2::23"}


class RoleUnavailable(Exception):
    """Why a role gave no credentials, in words fit for logs: never a secret."""


@dataclass(frozen=True)
class Expiring:
    credentials: Credentials
    expires_at: float | None  # epoch seconds; None when no Expiration was given


class Role(Protocol):
    def skipped(self) -> str | None:
        """Why the role is not asked at all (not configured, disabled), else None."""

    def where(self) -> str:
        """The place, for messages."""

    def fetch(self) -> Expiring:
        """Credentials from the network; RoleUnavailable when there are none."""


def _split(url: str) -> SplitResult | None:
    """`url` in parts, None when it has no host or a port that is not a number."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a bad one
    except ValueError:
        return None
    return parts if parts.hostname else None


def origin(url: str) -> str:
    """scheme://host:port of `url`: paths and queries may carry tokens."""
    parts = _split(url)
    if parts is None or parts.hostname is None:
        return "(not a URL)"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def request(
    method: str, url: str, headers: Mapping[str, str], *, what: str, timeout: float
) -> bytes:
    """The body of a 200 answer; RoleUnavailable for no answer or another status."""
    parts = _split(url)
    if parts is None or parts.hostname is None or parts.scheme not in ("http", "https"):
        raise RoleUnavailable(f"{what}: not an http(s) URL")
    host, port = parts.hostname, parts.port
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, headers=dict(headers))
        answer = conn.getresponse()
        body = answer.read(ANSWER_MAX)
    except OSError as exc:
        raise RoleUnavailable(f"{what}: no answer ({exc.strerror or exc})") from None
    except http.client.HTTPException as exc:
        raise RoleUnavailable(f"{what}: a broken answer ({type(exc).__name__})") from None
    finally:
        conn.close()
    if answer.status != 200:
        raise RoleUnavailable(f"{what}: HTTP {answer.status}")
    return body


def parse_credentials(body: bytes, what: str) -> Expiring:
    """The JSON both endpoints answer: AccessKeyId, SecretAccessKey, Token, Expiration."""
    try:
        doc = json.loads(body)
        key, secret, token = doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token")
        expiration = doc.get("Expiration")
        expires = datetime.fromisoformat(expiration) if expiration else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RoleUnavailable(f"{what}: an unreadable answer") from None
    code = doc.get("Code", "Success")
    if code != "Success":
        raise RoleUnavailable(f"{what}: Code {str(code)[:60]!r}")
    if not (isinstance(key, str) and isinstance(secret, str) and key and secret):
        raise RoleUnavailable(f"{what}: no AccessKeyId/SecretAccessKey")
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return Expiring(
        Credentials(key, secret, token if isinstance(token, str) and token else None),
        expires.timestamp() if expires else None,
    )


def may_send_token(url: str) -> bool:
    """https anywhere; plain http only to this machine or the ECS/EKS link-local hosts."""
    parts = _split(url)
    if parts is None or parts.hostname is None:
        return False
    host = parts.hostname
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host in _PLAIN_HTTP_HOSTS:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _header_safe(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _text(body: bytes) -> str:
    """A token or a role name: printable ASCII, since it goes into a header or a path."""
    text = body.decode("ascii", "replace").strip()
    if not text or not _header_safe(text.replace("\n", " ")):
        raise RoleUnavailable("an unreadable answer from the metadata service")
    return text


class ContainerRole:
    """The ECS task role or EKS pod identity: an endpoint named in the environment, with
    an authorization token (the token file wins, and is read at each fetch: EKS rotates it)."""

    def __init__(self, environ: Mapping[str, str], *, timeout: float = TIMEOUT) -> None:
        relative = environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        full = environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        self.url = CONTAINER_ENDPOINT + relative if relative else full or None
        self.token = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") or None
        token_file = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        self.token_file = Path(token_file) if token_file else None
        self.timeout = timeout

    def skipped(self) -> str | None:
        if self.url is None:
            return "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/_FULL_URI not set"
        if not may_send_token(self.url):
            return "refused: https, or plain http to this machine or the ECS/EKS hosts only"
        return None

    def where(self) -> str:
        return "the container role" + (f" at {origin(self.url)}" if self.url else "")

    def fetch(self) -> Expiring:
        assert self.url is not None  # skipped() said so
        what = "the credentials"  # where() names the host
        body = request("GET", self.url, self._headers(), what=what, timeout=self.timeout)
        return parse_credentials(body, what)

    def _headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file is not None:
            try:
                token = self.token_file.read_bytes().decode("ascii", "replace").strip()
            except OSError as exc:
                raise RoleUnavailable(f"cannot read {self.token_file}: {exc.strerror}") from None
        if not token:
            return {}
        if not _header_safe(token):
            raise RoleUnavailable("the container authorization token is not printable ASCII")
        return {"Authorization": token}


class InstanceRole:
    """The EC2 instance profile through IMDSv2 only: a session token first, then the role
    name and its keys. IMDSv1's token-less GETs are what SSRF abuses; instances may refuse them."""

    def __init__(self, environ: Mapping[str, str], *, timeout: float = TIMEOUT) -> None:
        disabled = environ.get("AWS_EC2_METADATA_DISABLED", "")
        self.disabled = disabled.strip().lower() == "true"
        ipv6 = environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "").lower() == "ipv6"
        default = IMDS_ENDPOINT_IPV6 if ipv6 else IMDS_ENDPOINT
        self.endpoint = (environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or default).rstrip("/")
        self.timeout = timeout

    def skipped(self) -> str | None:
        return "AWS_EC2_METADATA_DISABLED=true" if self.disabled else None

    def where(self) -> str:
        return f"the EC2 instance role (IMDSv2 at {origin(self.endpoint)})"

    def fetch(self) -> Expiring:
        ttl = {"X-aws-ec2-metadata-token-ttl-seconds": IMDS_TOKEN_TTL}
        token = _text(self._ask("PUT", "/latest/api/token", ttl, "the IMDSv2 token"))
        headers = {"X-aws-ec2-metadata-token": token}
        roles = _text(self._ask("GET", IMDS_ROLES, headers, "the role name")).split()
        if not roles:
            raise RoleUnavailable("no role attached to this instance")
        what = f"role {roles[0][:64]}"
        path = IMDS_ROLES + quote(roles[0], safe="")
        return parse_credentials(self._ask("GET", path, headers, what), what)

    def _ask(self, method: str, path: str, headers: Mapping[str, str], what: str) -> bytes:
        return request(method, self.endpoint + path, headers, what=what, timeout=self.timeout)


class RoleCache:
    """A role's credentials, kept until REFRESH_BEFORE ahead of their Expiration. Called at
    every signed request from several upload threads: the usual call reads two attributes.
    One thread fetches; the others go on with the held credentials meanwhile, or wait for
    it when none are valid. A failed refresh keeps the old credentials until they expire."""

    def __init__(self, role: Role, *, clock: Callable[[], float] = time.time) -> None:
        self.role = role
        self.clock = clock
        self._lock = threading.Lock()
        self._held: Expiring | None = None
        self._next_fetch = 0.0  # epoch seconds: no fetch before
        self._why = ""  # what the last fetch said, when it failed

    def __call__(self) -> Credentials | None:
        if self.role.skipped() is not None:
            return None
        now = self.clock()
        if now >= self._next_fetch:
            self._fetch_once(now)
        return self._valid(now)

    def where(self) -> str:
        why = self.role.skipped() or self._why
        return self.role.where() + (f": {why}" if why else "")

    def _valid(self, now: float) -> Credentials | None:
        held = self._held
        if held is None or (held.expires_at is not None and now >= held.expires_at):
            return None
        return held.credentials

    def _fetch_once(self, now: float) -> None:
        if not self._lock.acquire(blocking=self._valid(now) is None):
            return  # another thread is fetching, and the held credentials are good
        try:
            if now >= self._next_fetch:  # not done while this thread waited
                self._fetch(now)
        finally:
            self._lock.release()

    def _fetch(self, now: float) -> None:
        try:
            got = self.role.fetch()
            if got.expires_at is not None and got.expires_at <= now:
                raise RoleUnavailable(f"expired at {_iso(got.expires_at)}: is the clock right?")
        except RoleUnavailable as exc:
            self._failed(now, str(exc))
            return
        expires_at = got.expires_at
        refresh_at = now + UNDATED_FOR if expires_at is None else expires_at - REFRESH_BEFORE
        self._held, self._why = got, ""
        self._next_fetch = max(refresh_at, now + RETRY_AFTER)
        expires = _iso(expires_at) if expires_at is not None else None
        log.info(kv("s3-role-credentials", source=self.role.where(), expires=expires))

    def _failed(self, now: float, why: str) -> None:
        self._why = why
        self._next_fetch = now + RETRY_AFTER
        if self._valid(now) is not None:  # worth a warning: it will matter at Expiration
            log.warning(kv("s3-role-refresh-failed", source=self.role.where(), error=why))
        else:  # off any cloud this is every minute; the "no credentials" error says it
            log.debug(kv("s3-role-unavailable", source=self.role.where(), error=why))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
