"""A small S3 client: SigV4-signed requests over http.client, one connection per thread.

Why not a library (measured on this machine: docs/BENCHMARKS.md, "S3 client libraries"):
none of boto3, minio and obstore lets the caller give, per request, a Content-MD5, the
payload's own sha256 as x-amz-content-sha256 (which the server checks), an
x-amz-checksum-sha256 and If-None-Match: * together, and on top of the standard library
the agent already loads they cost +28, +9 and +7 MiB against this module's +3. What S3
needs from a client here is a signature and a few XML answers: a few pages of code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ssl
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import BinaryIO
from urllib.parse import quote, urlsplit

from agent.config import PRESIGN_MAX

UNSIGNED = "UNSIGNED-PAYLOAD"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
BLOCK = 1 << 18  # bytes per send of a file body (http.client's default 8 KiB costs CPU)
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def error_code(self) -> str:
        """The <Code> of an S3 error document ("" when there is none)."""
        return xml_text(self.body, "Code")

    def server_time(self) -> datetime | None:
        date = self.headers.get("date")
        try:
            return parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            return None


def _child_text(element: ET.Element, tag: str) -> str:
    """The text of `tag` under `element`, in S3's namespace or in none (servers differ)."""
    found = element.find(f"{_NS}{tag}")
    if found is None:
        found = element.find(tag)
    return (found.text or "") if found is not None else ""


def _children(element: ET.Element, tag: str) -> list[ET.Element]:
    return element.findall(f"{_NS}{tag}") or element.findall(tag)


def _parse(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 - the configured server's answer, expat-limited


def xml_text(body: bytes, tag: str) -> str:
    try:
        return _child_text(_parse(body), tag)
    except ET.ParseError:
        return ""


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _signing_key(secret: str, day: str, region: str) -> bytes:
    """SigV4's key for one day, region and service, derived from the secret."""
    key = _hmac(f"AWS4{secret}".encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    return key


def _encode(text: str, safe: str = "") -> str:
    return quote(text, safe="-_.~" + safe)


def _canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))


def _canonical_request(
    method: str, path: str, canonical_query: str, signed: Mapping[str, str], payload: str
) -> str:
    """SigV4's canonical request; `signed`: the headers signed, lower-case names."""
    names = sorted(signed)
    lines = "".join(f"{name}:{signed[name]}\n" for name in names)
    return "\n".join([method, path, canonical_query, lines, ";".join(names), payload])


class ChunkReader:
    """A file body sent block by block: it stops the upload when `should_stop` says so,
    ends after `limit` bytes (one part of a file), and lets `throttle` pace each block."""

    def __init__(
        self,
        file: BinaryIO,
        should_stop: Callable[[], bool],
        stopped: type[Exception],
        *,
        limit: int | None = None,
        throttle: Callable[[int], None] = lambda size: None,
    ):
        self.file = file
        self.should_stop = should_stop
        self.stopped = stopped
        self.left = limit
        self.throttle = throttle

    def read(self, size: int = -1) -> bytes:
        if self.should_stop():
            raise self.stopped("stopped mid-upload")
        if self.left is not None:
            size = self.left if size < 0 else min(size, self.left)
        block = self.file.read(size)
        if self.left is not None:
            self.left -= len(block)
        self.throttle(len(block))
        return block


class S3Client:
    """Requests to one bucket. `addressing`: "path" (endpoint/bucket/key) or "virtual"
    (bucket.endpoint/key); "auto" is virtual on AWS, path elsewhere (MinIO, Ceph)."""

    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        bucket: str,
        credentials: Callable[[], Credentials],
        addressing: str = "auto",
        timeout: float = 30.0,
        ca_file: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        url = urlsplit(endpoint or f"https://s3.{region}.amazonaws.com")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.secure = url.scheme == "https"
        aws = not endpoint
        virtual = addressing == "virtual" or (addressing == "auto" and aws)
        # A default port is left out: http.client and browsers send Host without it, and
        # the signed host must be the one they send.
        default = 443 if self.secure else 80
        host = url.hostname if url.port in (None, default) else f"{url.hostname}:{url.port}"
        self.host = f"{bucket}.{host}" if virtual else host
        self.base = "" if virtual else f"/{_encode(bucket)}"
        self.region = region
        self.bucket = bucket
        self.credentials = credentials
        self.timeout = timeout
        self.clock = clock
        self._tls = ssl.create_default_context(cafile=ca_file) if self.secure else None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    # --- connections

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._tls is not None:
                conn = http.client.HTTPSConnection(
                    self.host, timeout=self.timeout, context=self._tls, blocksize=BLOCK
                )
            else:
                conn = http.client.HTTPConnection(self.host, timeout=self.timeout, blocksize=BLOCK)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    # --- requests

    def path(self, key: str) -> str:
        return f"{self.base}/{_encode(key, safe='/')}" if key else (self.base or "/")

    def request(
        self,
        method: str,
        key: str = "",
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | ChunkReader = b"",
        content_sha256: str | None = None,
        length: int | None = None,
    ) -> Response:
        """Send one signed request; OSError / http.client errors propagate (the caller
        classifies them). `content_sha256` is the payload's hex sha256 (the server checks
        it); by default it is computed for bytes bodies."""
        if content_sha256 is None:
            content_sha256 = (
                hashlib.sha256(body).hexdigest() if isinstance(body, bytes) else UNSIGNED
            )
        size = len(body) if isinstance(body, bytes) else length
        all_headers = {k.lower(): v for k, v in (headers or {}).items()}
        if size is not None and (size or method in ("PUT", "POST")):
            all_headers["content-length"] = str(size)
        canonical_query = _canonical_query(query or {})
        path = self.path(key)
        all_headers |= self._sign(method, path, canonical_query, all_headers, content_sha256)
        target = f"{path}?{canonical_query}" if canonical_query else path
        conn = self._connection()
        try:
            conn.request(method, target, body=body or None, headers=all_headers)
            answer = conn.getresponse()
            data = answer.read()
        except BaseException:
            self.drop_connection()  # half a request on it: never reuse
            raise
        got = {name.lower(): value for name, value in answer.getheaders()}
        if got.get("connection", "").lower() == "close":
            self.drop_connection()
        return Response(answer.status, got, data)

    def _sign(
        self,
        method: str,
        path: str,
        canonical_query: str,
        headers: Mapping[str, str],
        content_sha256: str,
    ) -> dict[str, str]:
        creds = self.credentials()
        amz_date = self.clock().strftime(AMZ_DATE)
        signed = {
            "host": self.host,
            "x-amz-date": amz_date,
            "x-amz-content-sha256": content_sha256,
            **{k: v.strip() for k, v in headers.items() if k != "content-length"},
        }
        if creds.session_token:
            signed["x-amz-security-token"] = creds.session_token
        canonical = _canonical_request(method, path, canonical_query, signed, content_sha256)
        signature = self._signature(creds.secret_access_key, amz_date, canonical)
        auth = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key_id}/{self._scope(amz_date)},"
            f" SignedHeaders={';'.join(sorted(signed))}, Signature={signature}"
        )
        out = {k: v for k, v in signed.items() if k != "host"}
        out["authorization"] = auth
        return out

    def _scope(self, amz_date: str) -> str:
        return f"{amz_date[:8]}/{self.region}/s3/aws4_request"

    def _signature(self, secret: str, amz_date: str, canonical: str) -> str:
        """SigV4's signature of a canonical request, with the key derived for its day."""
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, self._scope(amz_date), digest])
        key = _signing_key(secret, amz_date[:8], self.region)
        return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()

    def presign(self, method: str, key: str, expires_seconds: int) -> str:
        """A URL that does `method` on `key` without credentials for `expires_seconds` from
        the clock's now (SigV4 query-string auth). Offline: nothing is sent to the server."""
        if not 1 <= expires_seconds <= PRESIGN_MAX:
            raise ValueError(f"expiry must be 1 to {PRESIGN_MAX} s, not {expires_seconds}")
        creds = self.credentials()
        amz_date = self.clock().strftime(AMZ_DATE)
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{creds.access_key_id}/{self._scope(amz_date)}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires_seconds),
            "X-Amz-SignedHeaders": "host",
        }
        if creds.session_token:  # signed in the query, not as a header, for S3
            query["X-Amz-Security-Token"] = creds.session_token
        path = self.path(key)
        canonical_query = _canonical_query(query)
        canonical = _canonical_request(method, path, canonical_query, {"host": self.host}, UNSIGNED)
        signature = self._signature(creds.secret_access_key, amz_date, canonical)
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.host}{path}?{canonical_query}&X-Amz-Signature={signature}"

    def list_keys(self, prefix: str, *, delimiter: str = "") -> Iterator[tuple[str, bool]]:
        """(key or common prefix, is_prefix) under `prefix`, every page."""
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if delimiter:
                query["delimiter"] = delimiter
            if token:
                query["continuation-token"] = token
            answer = self.request("GET", "", query=query)
            if answer.status != 200:
                raise S3Failure(answer)
            root = _parse(answer.body)
            for element in _children(root, "Contents"):
                yield _child_text(element, "Key"), False
            for element in _children(root, "CommonPrefixes"):
                yield _child_text(element, "Prefix"), True
            token = _child_text(root, "NextContinuationToken")
            if _child_text(root, "IsTruncated") != "true" or not token:
                return

    def list_uploads(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, upload id) of the multipart uploads begun and not finished under `prefix`."""
        markers: dict[str, str] = {}
        while True:
            answer = self.request("GET", "", query={"uploads": "", "prefix": prefix, **markers})
            if answer.status != 200:
                raise S3Failure(answer)
            root = _parse(answer.body)
            for element in _children(root, "Upload"):
                yield _child_text(element, "Key"), _child_text(element, "UploadId")
            markers = {
                "key-marker": _child_text(root, "NextKeyMarker"),
                "upload-id-marker": _child_text(root, "NextUploadIdMarker"),
            }
            if _child_text(root, "IsTruncated") != "true" or not markers["key-marker"]:
                return


class S3Failure(Exception):
    """An answer that was not the one asked for; the transport classifies it."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status} {response.error_code()}".strip())
        self.response = response


def md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def tag_set(body: bytes) -> dict[str, str]:
    """The tags of a GET ?tagging answer ({} when it is not a Tagging document)."""
    try:
        root = _parse(body)
    except ET.ParseError:
        return {}
    found = root.find(f"{_NS}TagSet")
    tag_set = found if found is not None else root.find("TagSet")
    if tag_set is None:
        return {}
    return {_child_text(tag, "Key"): _child_text(tag, "Value") for tag in _children(tag_set, "Tag")}
