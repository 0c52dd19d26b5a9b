"""Recordings above `multipart_threshold_mb` go up in parts (S3's multipart upload).

Each part is sent with its MD5 (Content-MD5) and sha256 (signed x-amz-content-sha256, and
x-amz-checksum-sha256 for servers that keep it); the upload id and every finished part
are noted in a ledger (the state database), so after a crash the upload resumes and sends
only the parts the server has not confirmed. The object appears only when the server
completes the upload, whole.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol
from xml.sax.saxutils import escape

from agent.errors import TransientError
from agent.model import Part, PartUpload

MIB = 1 << 20
CHUNK = MIB  # bytes read at a time; part sizes are whole MiB, so parts end on a block
PART_MIN = 8 * MIB  # S3 refuses parts under 5 MiB but the last
MAX_PARTS = 10_000
ABANDONED_AFTER = 7 * 86400.0  # a noted upload not resumed for this long is given up
# Only recordings (YYYY/MM/DD/<name>) go up in parts: an upload elsewhere under the prefix
# is not this agent's.
RECORDING_KEY = re.compile(r"\d{4}/\d{2}/\d{2}/[^/]+")


class PartLedger(Protocol):
    """Where upload ids and finished parts are kept (agent.store.uploads.UploadLedger)."""

    def uploads(self, key: str | None = None) -> list[PartUpload]: ...

    def begin(self, upload: PartUpload) -> None: ...

    def part_done(self, upload_id: str, part: Part) -> None: ...

    def forget(self, upload_id: str, why: str) -> None: ...

    def close(self) -> None: ...


class NoLedger:
    """For a transport without a state database (doctor, tests): nothing is resumed."""

    def uploads(self, key: str | None = None) -> list[PartUpload]:
        return []

    def begin(self, upload: PartUpload) -> None:
        pass

    def part_done(self, upload_id: str, part: Part) -> None:
        pass

    def forget(self, upload_id: str, why: str) -> None:
        pass

    def close(self) -> None:
        pass


def part_size(size: int) -> int:
    """At least PART_MIN, in whole MiB, and few enough parts for S3's limit."""
    needed = -(-size // MAX_PARTS)
    return max(PART_MIN, -(-needed // MIB) * MIB)


def read_checked(local: Path, sha256: str) -> Iterator[bytes]:
    """`local` in blocks of CHUNK bytes; at the end, TransientError when the whole does not
    have the sha256 it was given (it changed after it was hashed: nothing is sent)."""
    whole = hashlib.sha256()
    try:
        with local.open("rb") as file:
            while chunk := file.read(CHUNK):
                whole.update(chunk)
                yield chunk
    except FileNotFoundError as exc:
        raise TransientError(f"{local} vanished before the upload") from exc
    except OSError as exc:
        raise TransientError(f"cannot read {local}: {exc.strerror or exc}") from exc
    if whole.hexdigest() != sha256:
        raise TransientError(f"{local.name} changed after it was hashed: not sent")


def part_digests(local: Path, sha256: str, size_of_part: int) -> list[tuple[bytes, bytes]]:
    """(MD5, sha256) of each part of `local` (`size_of_part` a multiple of CHUNK), after
    checking the whole still has its sha256: one read of the file."""
    digests = []
    md5, sha, filled = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    for chunk in read_checked(local, sha256):
        md5.update(chunk)
        sha.update(chunk)
        filled += len(chunk)
        if filled == size_of_part:
            digests.append((md5.digest(), sha.digest()))
            md5, sha, filled = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    if filled:
        digests.append((md5.digest(), sha.digest()))
    return digests


def multipart_etag(etags: Sequence[str]) -> str | None:
    """The ETag S3 gives the completed object: the MD5 of the parts' MD5s, "-", their
    count. None when a part's ETag is not its MD5 (SSE-KMS): nothing to compare then."""
    if not all(re.fullmatch(r"[0-9a-f]{32}", etag) for etag in etags):
        return None
    joined = b"".join(bytes.fromhex(etag) for etag in etags)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(etags)}"


def complete_body(parts: Sequence[Part]) -> bytes:
    items = "".join(
        f"<Part><PartNumber>{p.number}</PartNumber><ETag>&quot;{escape(p.etag)}&quot;</ETag>"
        f"<ChecksumSHA256>{escape(p.sha256)}</ChecksumSHA256></Part>"
        for p in sorted(parts, key=lambda p: p.number)
    )
    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()
