"""Object storage (S3-compatible: AWS, MinIO, Ceph RGW, Wasabi, B2, R2) as a destination.

A PUT is atomic in S3: an object is visible only when the whole body arrived, so no
temporary name or rename is needed. Each PUT carries the body's sha256 as the signed
x-amz-content-sha256 and its MD5 as Content-MD5 (the server refuses a body that differs
from either), plus x-amz-checksum-sha256 for servers that store it; a HEAD then
confirms the size and the ETag (the MD5 of a single-PUT object, or the MD5 of the parts'
MD5s) before `put` returns. Large recordings go up in parts (s3parts.py).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import mimetypes
import posixpath
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from agent.errors import (
    AgentError,
    DestinationDown,
    Interrupted,
    PermanentError,
    TransientError,
)
from agent.log import kv
from agent.model import Part, PartUpload
from agent.testhooks import crash_point
from agent.transport import TEMP_PREFIX, TEMP_SUFFIX, Features, RemoteFile, check_remote
from agent.transport.ratelimit import RateLimit
from agent.transport.s3client import (
    BLOCK,
    ChunkReader,
    Credentials,
    Response,
    S3Client,
    S3Failure,
    md5_base64,
    xml_text,
)
from agent.transport.s3parts import (
    ABANDONED_AFTER,
    RECORDING_KEY,
    NoLedger,
    PartLedger,
    b64,
    complete_body,
    multipart_etag,
    part_digests,
    part_size,
    read_checked,
)

log = logging.getLogger(__name__)

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
_SHA256 = re.compile(r"[0-9a-f]{64}")
MULTIPART_THRESHOLD = 512 * 10**6  # destination.multipart_threshold_mb's default


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


def object_sha256(head: Response) -> str | None:
    """The object's sha256 as its HEAD tells it (hex), None when it cannot."""
    checksum = head.headers.get("x-amz-checksum-sha256", "")
    if checksum and "-" not in checksum:  # "…-N": a checksum of the parts' checksums
        try:
            digest = base64.b64decode(checksum, validate=True)
        except ValueError:
            digest = b""
        if len(digest) == 32:
            return digest.hex()
    meta = head.headers.get("x-amz-meta-sha256", "").lower()
    return meta if _SHA256.fullmatch(meta) else None


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
        object_tags: bool = False,
        bwlimit_kbps: int = 0,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        uploads: PartLedger | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`uploads`: where multipart uploads are noted so they resume after a crash (the
        agent's state database); without it they are not resumed, and uploads abandoned
        by an earlier run are left alone (doctor and the CLI must not touch the running
        agent's)."""
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
        self.object_tags = object_tags
        self.multipart_threshold = multipart_threshold
        self.uploads: PartLedger = uploads or NoLedger()
        self._abandoned_checked = uploads is None
        self._limit = RateLimit(bwlimit_kbps * 1000 / 8, BLOCK)
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

    def presign(self, remote: str, expires_seconds: int) -> str:
        """A GET URL for `remote` that needs no credentials, valid `expires_seconds` from
        now (at most 7 days). Signed here, offline: the object is not looked at."""
        return self.client.presign("GET", self.key(remote), expires_seconds)

    # --- one request, its faults classified

    def _send(self, what: str, method: str, key: str = "", **kwargs: object) -> Response:
        try:
            return self.client.request(method, key, **kwargs)  # type: ignore[arg-type]
        except Interrupted:
            raise
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout
            raise self._unreachable(what, exc) from exc

    def _unreachable(self, what: str, exc: OSError | http.client.HTTPException) -> AgentError:
        """A network fault, to try again; an endpoint whose certificate we do not trust,
        to pause on (as an SFTP host key that does not match): retrying changes nothing."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DestinationDown(
                f"{what}: the TLS certificate of {self.client.host} is not trusted"
                f" ({exc.verify_message}); a private CA goes in destination.ca_file"
                " (or AWS_CA_BUNDLE)"
            )
        return TransientError(f"{what}: cannot reach {self.client.host}: {exc}")

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
        if not self._abandoned_checked:
            self._abort_abandoned()
            self._abandoned_checked = True

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
        headers = {
            "content-type": content_type(remote),
            **self._extra,
            **self._tagging("recording"),
            **meta_headers(metadata or {}),
        }
        try:
            size = local.stat().st_size
        except FileNotFoundError as exc:
            raise TransientError(f"{local} vanished before the upload") from exc
        if size > self.multipart_threshold:
            self._put_parts(local, remote, key, sha256, size, headers, should_stop)
            return
        md5, size = self._hash(local, sha256)
        headers["content-md5"] = base64.b64encode(md5).decode()
        headers["x-amz-checksum-sha256"] = b64(bytes.fromhex(sha256))
        headers["x-amz-sdk-checksum-algorithm"] = "SHA256"  # without it moto keeps none
        try:
            with local.open("rb") as file:
                answer = self._send(
                    f"put {remote}",
                    "PUT",
                    key,
                    body=self._body(file, should_stop),
                    length=size,
                    headers=headers,
                    content_sha256=sha256,
                )
        except FileNotFoundError as exc:
            raise TransientError(f"{local} vanished before the upload") from exc
        if answer.status != 200:
            raise self._fault(f"put {remote}", answer)
        crash_point("upload:sent")
        self._confirm(remote, key, size, md5.hex())

    def _body(
        self, file: BinaryIO, should_stop: Callable[[], bool], limit: int | None = None
    ) -> ChunkReader:
        return ChunkReader(
            file, should_stop, Interrupted, limit=limit, throttle=self._limit.take_blocking
        )

    def _tagging(self, kind: str) -> dict[str, str]:
        """Object tags, when asked for (B2 and R2 refuse them): what a lifecycle rule can
        tell apart, e.g. recordings to a colder class, pages never."""
        if not self.object_tags:
            return {}
        return {"x-amz-tagging": urlencode({"recsync": kind})}

    # --- multipart

    def _put_parts(
        self,
        local: Path,
        remote: str,
        key: str,
        sha256: str,
        size: int,
        headers: Mapping[str, str],
        should_stop: Callable[[], bool],
    ) -> None:
        size_of_part = part_size(size)
        digests = part_digests(local, sha256, size_of_part)
        upload = self._resumable(remote, key, sha256, size_of_part, headers)
        parts = []
        try:
            with local.open("rb") as file:
                for number, (md5, sha) in enumerate(digests, 1):
                    done = upload.parts.get(number)
                    if done is not None and done.sha256 == b64(sha):
                        parts.append(done)  # confirmed by the server before a crash
                        continue
                    if should_stop():
                        raise Interrupted("stopped mid-upload (the parts sent are kept)")
                    offset = (number - 1) * size_of_part
                    file.seek(offset)
                    length = min(size_of_part, size - offset)
                    part = self._send_part(remote, key, upload, number, file, length, md5, sha)
                    self.uploads.part_done(upload.upload_id, part)
                    crash_point("multipart:part-sent")
                    parts.append(part)
        except FileNotFoundError as exc:
            raise TransientError(f"{local} vanished before the upload") from exc
        self._complete(remote, key, upload, parts)
        expected = multipart_etag([p.etag for p in parts])
        self._confirm(remote, key, size, expected)

    def _resumable(
        self, remote: str, key: str, sha256: str, size_of_part: int, headers: Mapping[str, str]
    ) -> PartUpload:
        """The upload of this very file noted earlier, or a new one. Uploads of an
        earlier version of the file are aborted."""
        for noted in self.uploads.uploads(key):
            if noted.sha256 == sha256 and noted.part_size == size_of_part:
                return noted
            self._abort(key, noted.upload_id, "replaced")
        answer = self._send(
            f"put {remote}",
            "POST",
            key,
            query={"uploads": ""},
            headers={**headers, "x-amz-checksum-algorithm": "SHA256"},
        )
        upload_id = xml_text(answer.body, "UploadId") if answer.status == 200 else ""
        if not upload_id:
            raise self._fault(f"put {remote}", answer)
        upload = PartUpload(upload_id, key, sha256, size_of_part, time.time())
        self.uploads.begin(upload)
        return upload

    def _send_part(
        self,
        remote: str,
        key: str,
        upload: PartUpload,
        number: int,
        file: BinaryIO,
        length: int,
        md5: bytes,
        sha: bytes,
    ) -> Part:
        """Send `length` bytes of `file` from where it stands as part `number`."""
        answer = self._send(
            f"put {remote} part {number}",
            "PUT",
            key,
            query={"partNumber": str(number), "uploadId": upload.upload_id},
            body=self._body(file, lambda: False, limit=length),
            length=length,
            headers={"content-md5": b64(md5), "x-amz-checksum-sha256": b64(sha)},
            content_sha256=sha.hex(),
        )
        if answer.status != 200:
            raise self._part_fault(f"put {remote} part {number}", key, upload, answer)
        return Part(number, answer.headers.get("etag", "").strip('"'), b64(sha))

    def _complete(self, remote: str, key: str, upload: PartUpload, parts: list[Part]) -> None:
        answer = self._send(
            f"complete {remote}",
            "POST",
            key,
            query={"uploadId": upload.upload_id},
            body=complete_body(parts),
            headers={"content-type": "application/xml"},
        )
        # A 200 may still carry an <Error> (S3 answers before it has joined the parts).
        if answer.status != 200 or answer.error_code():
            raise self._part_fault(f"complete {remote}", key, upload, answer)
        self.uploads.forget(upload.upload_id, "completed")

    def _part_fault(self, what: str, key: str, upload: PartUpload, answer: Response) -> Exception:
        """An upload the server no longer knows (aborted by a lifecycle rule) or whose
        parts it refuses is begun anew at the next try."""
        if answer.error_code() in ("NoSuchUpload", "InvalidPart", "InvalidPartOrder"):
            self._abort(key, upload.upload_id, "lost")
            return TransientError(f"{what}: {answer.error_code()}; the upload starts over")
        fault = self._fault(what, answer)
        if isinstance(fault, PermanentError):
            self._abort(key, upload.upload_id, "refused")
        return fault

    def _abort(self, key: str, upload_id: str, why: str) -> None:
        answer = self._send(f"abort {key}", "DELETE", key, query={"uploadId": upload_id})
        if answer.status not in (200, 204, 404):
            raise self._fault(f"abort {key}", answer)
        self.uploads.forget(upload_id, f"aborted-{why}")

    def _abort_abandoned(self) -> None:
        """At start: abort this agent's multipart uploads that nothing will resume — on
        recording keys under the prefix and not noted, or noted too long ago."""
        noted = {u.upload_id: u for u in self.uploads.uploads()}
        stale = time.time() - ABANDONED_AFTER
        try:
            found = list(self.client.list_uploads(self.prefix))
        except S3Failure as exc:
            raise self._fault("list uploads", exc.response) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable("list uploads", exc) from exc
        for key, upload_id in found:
            if not RECORDING_KEY.fullmatch(key[len(self.prefix) :]):
                continue
            kept = noted.pop(upload_id, None)
            if kept is None or kept.started_at < stale:
                self._abort(key, upload_id, "abandoned")
                log.info(kv("multipart-aborted", key=key, upload_id=upload_id))
        for gone in noted.values():  # noted here, unknown to the server
            self.uploads.forget(gone.upload_id, "lost")

    def _hash(self, local: Path, sha256: str) -> tuple[bytes, int]:
        """MD5 and size of `local`, after checking it still has the sha256 it was given."""
        md5, size = hashlib.md5(usedforsecurity=False), 0
        for chunk in read_checked(local, sha256):
            md5.update(chunk)
            size += len(chunk)
        return md5.digest(), size

    def _confirm(self, remote: str, key: str, size: int, etag_sent: str | None) -> None:
        """HEAD: the object has the size and the ETag of what was sent (the MD5, or for
        parts the MD5 of their MD5s; an SSE-KMS ETag is neither: size only)."""
        head = self._send(f"check {remote}", "HEAD", key)
        if head.status != 200:
            raise self._fault(f"check {remote}", head)
        etag = head.headers.get("etag", "").strip('"')
        length = int(head.headers.get("content-length", "-1"))
        kms = self._extra.get("x-amz-server-side-encryption") == "aws:kms"
        compared = etag_sent is not None and not kms
        if length != size or (compared and etag != etag_sent):
            self._send(f"remove {remote}", "DELETE", key)
            raise TransientError(
                f"{remote} arrived as {length} bytes (ETag {etag}), not {size} bytes ({etag_sent})"
            )

    def write_bytes(self, remote: str, data: bytes) -> None:
        key = self.key(remote)
        headers = {**_small_file_headers(remote, data), **self._tagging("index")}
        answer = self._send(f"write {remote}", "PUT", key, body=data, headers=headers)
        if answer.status != 200:
            raise self._fault(f"write {remote}", answer)

    def create_bytes(self, remote: str, data: bytes) -> bool:
        """A PUT with If-None-Match: *, which the server refuses (412) when the key exists:
        of two agents claiming a prefix at once, one wins. Servers that ignore the header
        overwrite (True); one that answers 501 NotImplemented (AWS did before 2024) gets a
        plain write: the caller's read-then-write check is all there is there."""
        key = self.key(remote)
        headers = {
            **_small_file_headers(remote, data),
            **self._tagging("index"),
            "if-none-match": "*",
        }
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

    def stat_remote(self, remote: str) -> RemoteFile | None:
        """HEAD: the stored size, and the sha256 — the server's own checksum of a single
        PUT where it keeps one (x-amz-checksum-sha256, asked with checksum mode), else
        the one the recording was put with (x-amz-meta-sha256, which the server checked
        as x-amz-content-sha256 on the PUT). An object with neither: size only."""
        head = self._send(
            f"check {remote}",
            "HEAD",
            self.key(remote),
            headers={"x-amz-checksum-mode": "ENABLED"},
        )
        if head.status == 404:
            return None
        if head.status != 200:
            raise self._fault(f"check {remote}", head)
        size = int(head.headers.get("content-length", "-1"))
        return RemoteFile(size, object_sha256(head))

    def listdir(self, folder: str = "") -> list[str]:
        prefix = self.prefix + (check_remote(folder) + "/" if folder else "")
        try:
            found = list(self.client.list_keys(prefix, delimiter="/"))
        except S3Failure as exc:
            raise self._fault(f"list {folder or '/'}", exc.response) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable("list", exc) from exc
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
        self.uploads.close()  # the transport owns the ledger it was given
