"""Object storage (S3-compatible: AWS, MinIO, Ceph RGW, Wasabi, B2, R2) as a destination.

A PUT is atomic in S3: an object is visible only when the whole body arrived, so no
temporary name or rename is needed. Each PUT carries the body's sha256 as the signed
x-amz-content-sha256 and its MD5 as Content-MD5 (the server refuses a body that differs
from either), plus x-amz-checksum-sha256 for servers that store it; a HEAD then
confirms the size and the ETag (the MD5 of a single-PUT object) before `put` returns.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import mimetypes
import posixpath
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

from agent.errors import DestinationDown, Interrupted, PermanentError, TransientError
from agent.transport import TEMP_PREFIX, TEMP_SUFFIX, Features, check_remote
from agent.transport.s3client import (
    ChunkReader,
    Credentials,
    Response,
    S3Client,
    S3Failure,
    md5_base64,
)

CHUNK = 1 << 20
NAME_MAX = 255  # bytes of one path segment: what any file system mirroring it can hold
# Codes that mean the whole destination refuses work: pause and probe.
_REFUSED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "AccountProblem",
    "InvalidToken",
    "ExpiredToken",
    "NoSuchBucket",
    "RequestTimeTooSkewed",
    "AllAccessDisabled",
    "QuotaExceeded",
}
# Codes of one object: its name or size is not acceptable to the server.
_OBJECT_FAULTS = {"KeyTooLongError", "InvalidObjectName", "EntityTooLarge", "InvalidArgument"}
_NO_CACHE = (".html", ".json")


META_VALUE_MAX = 256  # bytes of one x-amz-meta-* value, encoded (S3 allows 2 KB in all)
_META_SAFE = "-_.~ :+@,/"  # kept as they are; everything else is %-encoded UTF-8


def meta_headers(fields: Mapping[str, str]) -> dict[str, str]:
    """The call's fields as x-amz-meta-* headers: %-encoded UTF-8 (header values must be
    ASCII without control characters, and caller names are hostile text), each cut to
    META_VALUE_MAX at a character boundary."""
    headers = {}
    for name, value in fields.items():
        encoded = ""
        for char in value:
            piece = quote(char, safe=_META_SAFE)
            if len(encoded) + len(piece) > META_VALUE_MAX:
                break
            encoded += piece
        headers[f"x-amz-meta-{name.replace('_', '-').lower()}"] = encoded
    return headers


RETRY_AFTER_MAX = 3600.0  # a server asking for more is capped: the backoff's own maximum


def retry_after(answer: Response) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), None when absent or unreadable."""
    value = answer.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        date = answer.server_time() or datetime.now(UTC)
        seconds = (when - date).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def _small_file_headers(remote: str, data: bytes) -> dict[str, str]:
    """A page, manifest or status.json: checked by MD5, typed, and never cached (they change)."""
    headers = {"content-md5": md5_base64(data), "content-type": content_type(remote)}
    if remote.endswith(_NO_CACHE):
        headers["cache-control"] = "no-cache"
    return headers


def content_type(remote: str) -> str:
    guessed, _ = mimetypes.guess_type(remote)
    if remote.endswith(".json"):
        return "application/json"
    return guessed or "application/octet-stream"


class S3Transport:
    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        bucket: str,
        prefix: str = "",
        credentials: Callable[[], Credentials],
        addressing: str = "auto",
        connections: int = 4,
        timeout: float = 30.0,
        ca_file: str | None = None,
        storage_class: str | None = None,
        sse: str | None = None,
        kms_key_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.connections = connections
        self.clock = clock
        self.client = S3Client(
            endpoint=endpoint,
            region=region,
            bucket=bucket,
            credentials=credentials,
            addressing=addressing,
            timeout=timeout,
            ca_file=ca_file,
            clock=clock,
        )
        self._extra: dict[str, str] = {}
        if storage_class:
            self._extra["x-amz-storage-class"] = storage_class
        if sse:  # never an ACL: B2 and others reject them, and a bucket policy decides
            self._extra["x-amz-server-side-encryption"] = sse
            if kms_key_id:
                self._extra["x-amz-server-side-encryption-aws-kms-key-id"] = kms_key_id

    @property
    def features(self) -> Features:
        return Features(
            parallel=self.connections,
            atomic_replace=True,
            fsync=True,  # a 200 to a PUT means stored
            verify="sha256",  # x-amz-content-sha256 is checked by the server
            sha256_by="server",
            create_bytes=self.create_bytes,
        )

    def _where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, remote: str) -> str:
        check_remote(remote)
        if any(len(part.encode()) > NAME_MAX for part in remote.split("/")):
            raise PermanentError(f"{remote[:80]}…: a name over {NAME_MAX} bytes")
        return self.prefix + remote

    # --- one request, its faults classified

    def _send(self, what: str, method: str, key: str = "", **kwargs: object) -> Response:
        try:
            return self.client.request(method, key, **kwargs)  # type: ignore[arg-type]
        except Interrupted:
            raise
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout
            raise TransientError(f"{what}: cannot reach {self.client.host}: {exc}") from exc

    def _fault(self, what: str, answer: Response) -> Exception:
        code = answer.error_code()
        where = self._where()
        if code == "NoSuchBucket" or (answer.status == 404 and not code and what == "probe"):
            return DestinationDown(f"bucket {self.bucket} does not exist ({where})")
        if code == "RequestTimeTooSkewed":
            skew = ""
            server = answer.server_time()
            if server is not None:
                skew = f" by {abs((self.clock() - server).total_seconds()):.0f} s"
            return DestinationDown(f"{what}: this machine's clock is off{skew} (fix NTP)")
        if code in _REFUSED or answer.status in (401, 403):
            return DestinationDown(f"{what}: {code or answer.status} at {where}")
        if code in _OBJECT_FAULTS or answer.status in (413, 414):
            return PermanentError(f"{what}: {code or answer.status}")
        wait = retry_after(answer)
        after = f" (retry after {wait:.0f} s)" if wait is not None else ""
        return TransientError(
            f"{what}: HTTP {answer.status} {code}{after}".rstrip(), retry_after=wait
        )

    # --- the Transport contract

    def probe(self) -> None:
        key = f"{self.prefix}{TEMP_PREFIX}probe-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        answer = self._send("probe", "PUT", key, body=b"", headers={"content-md5": md5_base64(b"")})
        if answer.status != 200:
            raise self._fault("probe", answer)
        head = self._send("probe", "HEAD", key)
        self._send("probe", "DELETE", key)
        if head.status != 200:
            raise self._fault("probe", head)

    def put(
        self,
        local: Path,
        remote: str,
        *,
        sha256: str,
        should_stop: Callable[[], bool] = lambda: False,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        key = self.key(remote)
        if should_stop():
            raise Interrupted("stopped before the upload")
        md5, size = self._hash(local, sha256)
        headers = {
            "content-md5": base64.b64encode(md5).decode(),
            "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(sha256)).decode(),
            "x-amz-sdk-checksum-algorithm": "SHA256",  # without it moto keeps no checksum
            "content-type": content_type(remote),
            **self._extra,
            **meta_headers(metadata or {}),
        }
        try:
            with local.open("rb") as file:
                answer = self._send(
                    f"put {remote}",
                    "PUT",
                    key,
                    body=ChunkReader(file, should_stop, Interrupted),
                    length=size,
                    headers=headers,
                    content_sha256=sha256,
                )
        except FileNotFoundError as exc:
            raise TransientError(f"{local} vanished before the upload") from exc
        if answer.status != 200:
            raise self._fault(f"put {remote}", answer)
        self._confirm(remote, key, size, md5.hex())

    def _hash(self, local: Path, sha256: str) -> tuple[bytes, int]:
        """MD5 and size of `local`, after checking it still has the sha256 it was given."""
        md5 = hashlib.md5(usedforsecurity=False)
        sha = hashlib.sha256()
        size = 0
        try:
            with local.open("rb") as file:
                while chunk := file.read(CHUNK):
                    md5.update(chunk)
                    sha.update(chunk)
                    size += len(chunk)
        except FileNotFoundError as exc:
            raise TransientError(f"{local} vanished before the upload") from exc
        except OSError as exc:
            raise TransientError(f"cannot read {local}: {exc.strerror or exc}") from exc
        if sha.hexdigest() != sha256:
            raise TransientError(f"{local.name} changed after it was hashed: not sent")
        return md5.digest(), size

    def _confirm(self, remote: str, key: str, size: int, md5_hex: str) -> None:
        """HEAD: the object has the size and (for a plain ETag) the MD5 that was sent."""
        head = self._send(f"check {remote}", "HEAD", key)
        if head.status != 200:
            raise self._fault(f"check {remote}", head)
        etag = head.headers.get("etag", "").strip('"')
        length = int(head.headers.get("content-length", "-1"))
        plain = len(etag) == 32 and "-" not in etag  # not multipart, not SSE-KMS
        if length != size or (plain and etag != md5_hex):
            self._send(f"remove {remote}", "DELETE", key)
            raise TransientError(
                f"{remote} arrived as {length} bytes (ETag {etag}), not {size} bytes ({md5_hex})"
            )

    def write_bytes(self, remote: str, data: bytes) -> None:
        key = self.key(remote)
        headers = _small_file_headers(remote, data)
        answer = self._send(f"write {remote}", "PUT", key, body=data, headers=headers)
        if answer.status != 200:
            raise self._fault(f"write {remote}", answer)

    def create_bytes(self, remote: str, data: bytes) -> bool:
        """A PUT with If-None-Match: *, which the server refuses (412) when the key exists:
        of two agents claiming a prefix at once, one wins. Servers that ignore the header
        overwrite (True); one that answers 501 NotImplemented (AWS did before 2024) gets a
        plain write: the caller's read-then-write check is all there is there."""
        key = self.key(remote)
        headers = {**_small_file_headers(remote, data), "if-none-match": "*"}
        answer = self._send(f"create {remote}", "PUT", key, body=data, headers=headers)
        if answer.status == 412:
            return False
        if answer.status == 501:
            self.write_bytes(remote, data)
            return True
        if answer.status != 200:
            raise self._fault(f"create {remote}", answer)
        return True

    def read_bytes(self, remote: str) -> bytes | None:
        answer = self._send(f"read {remote}", "GET", self.key(remote))
        if answer.status == 404 and answer.error_code() in ("NoSuchKey", ""):
            return None
        if answer.status != 200:
            raise self._fault(f"read {remote}", answer)
        return answer.body

    def listdir(self, folder: str = "") -> list[str]:
        prefix = self.prefix + (check_remote(folder) + "/" if folder else "")
        try:
            found = list(self.client.list_keys(prefix, delimiter="/"))
        except S3Failure as exc:
            raise self._fault(f"list {folder or '/'}", exc.response) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"list: cannot reach {self.client.host}: {exc}") from exc
        return sorted({name[len(prefix) :].rstrip("/") for name, _ in found} - {""})

    def remove(self, remote: str) -> None:
        answer = self._send(f"remove {remote}", "DELETE", self.key(remote))
        if answer.status not in (200, 204, 404):
            raise self._fault(f"remove {remote}", answer)

    def sweep(self, folders: Iterable[str]) -> int:
        """Probe objects a killed probe left (a PUT leaves no partial object)."""
        removed = 0
        for folder in folders:
            for name in self.listdir(folder):
                if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                    self.remove(posixpath.join(folder, name))
                    removed += 1
        return removed

    def close(self) -> None:
        self.client.close()
