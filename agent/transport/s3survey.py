"""What an S3 server does with the headers recsync sends, learned by sending them.

S3-compatible servers accept headers they then ignore (Ceph RGW 16 takes a wrong
x-amz-checksum-sha256 with a 200), so no list of server names can say what a bucket
checks: `recsync doctor` asks with a probe object under the prefix, deleted after.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
from dataclasses import dataclass

from agent.errors import AgentError
from agent.transport import TEMP_PREFIX, TEMP_SUFFIX
from agent.transport.s3 import S3Transport
from agent.transport.s3client import Response, md5_base64, tag_set

BODY = b"recsync doctor: what this server checks\n"
WRONG_BODY = b"not the probe's body"
TAG = ("recsync", "doctor")


@dataclass(frozen=True)
class Support:
    checksum: str  # x-amz-checksum-sha256: "verified", "stored" (kept, not checked), "ignored"
    md5: bool  # a wrong Content-MD5 is refused (BadDigest)
    conditional: bool  # If-None-Match: * on an existing key is refused (412)
    tagging: bool  # x-amz-tagging on a PUT is kept (read back with ?tagging)


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def clock_skew(transport: S3Transport) -> float | None:
    """The server's clock minus ours, in seconds, from the Date of a bucket HEAD (every
    answer has one, a refusal for a skewed signature too); None without a Date."""
    before = transport.clock()
    answer = transport._send("clock", "HEAD", "")
    after = transport.clock()
    server = answer.server_time()
    if server is None:
        return None
    # Date is cut to the second: the server's time was half a second later on average.
    return (server - (before + (after - before) / 2)).total_seconds() + 0.5


def survey(transport: S3Transport) -> Support:
    """Raises what a put would (DestinationDown, TransientError) when the server refuses
    the probe object itself."""
    key = f"{transport.prefix}{TEMP_PREFIX}doctor-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        _put(transport, key, BODY, _checksum(BODY), expect_ok=True)
        stored = _returned_checksum(transport, key) == _sha256_b64(BODY)
        # The same headers with a right value were taken: a 400 now is about the value.
        refused = _put(transport, key, BODY, _checksum(WRONG_BODY)).status == 400
        md5 = _put(transport, key, BODY, {"content-md5": md5_base64(WRONG_BODY)}).status == 400
        conditional = _put(transport, key, BODY, {"if-none-match": "*"}).status == 412
        tagging = _tags_kept(transport, key)
    finally:
        with contextlib.suppress(AgentError):  # a fault of its own is the one to report
            transport._send("doctor", "DELETE", key)
    checksum = "verified" if refused else "stored" if stored else "ignored"
    return Support(checksum=checksum, md5=md5, conditional=conditional, tagging=tagging)


def _checksum(data: bytes) -> dict[str, str]:
    # The SDK's algorithm header too: some servers (moto) keep the value only with it.
    return {"x-amz-checksum-sha256": _sha256_b64(data), "x-amz-sdk-checksum-algorithm": "SHA256"}


def _put(
    transport: S3Transport,
    key: str,
    body: bytes,
    headers: dict[str, str],
    *,
    expect_ok: bool = False,
) -> Response:
    """One PUT of the probe object; an answer no header explains (auth, throttling, a
    missing bucket) is raised as the transport classifies it."""
    answer = transport._send(
        "doctor", "PUT", key, body=body, headers={"content-md5": md5_base64(body), **headers}
    )
    if answer.status == 200 or (not expect_ok and answer.status in (400, 412, 501)):
        return answer
    raise transport._fault("doctor", answer)


def _returned_checksum(transport: S3Transport, key: str) -> str:
    head = transport._send("doctor", "HEAD", key, headers={"x-amz-checksum-mode": "ENABLED"})
    if head.status != 200:
        raise transport._fault("doctor", head)
    return head.headers.get("x-amz-checksum-sha256", "")


def _tags_kept(transport: S3Transport, key: str) -> bool:
    if _put(transport, key, BODY, {"x-amz-tagging": "=".join(TAG)}).status != 200:
        return False  # refused outright (B2 and R2 answer NotImplemented)
    answer = transport._send("doctor", "GET", key, query={"tagging": ""})
    return answer.status == 200 and tag_set(answer.body).get(TAG[0]) == TAG[1]
