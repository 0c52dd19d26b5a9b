"""What only object storage does, against the real Ceph RGW (tests/support/s3.py): faults
classified at the adapter, the headers a page needs, keys that need encoding."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from agent.config import from_dict
from agent.daemon import Agent
from agent.errors import ConfigError, DestinationDown, PermanentError, TransientError
from agent.transport import open_transport
from agent.transport.s3 import (
    META_VALUE_MAX,
    S3Transport,
    meta_headers,
    object_sha256,
    retry_after,
)
from agent.transport.s3client import Credentials, Response, S3Client
from tests.conftest import Site
from tests.support.daemon import recsync
from tests.support.mixmonitor import write_recording
from tests.support.s3 import REGION, RadosGateway, S3Server
from tests.support.servers import free_port


def test_a_wrong_secret_pauses_with_the_reason(rgw: RadosGateway, s3_bucket: str) -> None:
    wrong = Credentials(rgw.credentials.access_key_id, "not-the-secret")
    transport = rgw.transport(s3_bucket, credentials=wrong)
    try:
        with pytest.raises(DestinationDown, match="SignatureDoesNotMatch"):
            transport.probe()
    finally:
        transport.close()


def test_an_unknown_key_id_pauses(rgw: RadosGateway, s3_bucket: str) -> None:
    transport = rgw.transport(s3_bucket, credentials=Credentials("NOSUCHKEY", "x"))
    try:
        with pytest.raises(DestinationDown, match="InvalidAccessKeyId"):
            transport.probe()
    finally:
        transport.close()


def test_a_clock_far_off_pauses_and_says_by_how_much(rgw: RadosGateway, s3_bucket: str) -> None:
    def late() -> datetime:
        return datetime.now(UTC) - timedelta(hours=1)

    transport = rgw.transport(s3_bucket, clock=late)
    try:
        with pytest.raises(DestinationDown, match=r"clock is off by 3[56]\d\d s"):
            transport.probe()
    finally:
        transport.close()


def test_a_server_that_is_down_is_transient(tmp_path: Path) -> None:
    transport = S3Transport(
        endpoint=f"http://127.0.0.1:{free_port()}",
        region=REGION,
        bucket="b",
        credentials=lambda: Credentials("a", "b"),
        addressing="path",
        timeout=5,
    )
    try:
        with pytest.raises(TransientError, match=r"cannot reach 127\.0\.0\.1"):
            transport.probe()
    finally:
        transport.close()


def test_pages_and_manifests_carry_their_type_and_no_cache(
    rgw: RadosGateway, s3_bucket: str, tmp_path: Path
) -> None:
    transport = rgw.transport(s3_bucket, "site")
    client = rgw.client(s3_bucket)
    try:
        transport.write_bytes("index.html", b"<html>")
        transport.write_bytes("2024/03/15/manifest.json", b"{}")
        recording = tmp_path / "a.mp3"
        recording.write_bytes(b"ID3" + b"\0" * 100)
        transport.put(
            recording, "2024/03/15/a.mp3", sha256=hashlib.sha256(recording.read_bytes()).hexdigest()
        )
        heads = {
            key: client.request("HEAD", f"site/{key}").headers
            for key in ("index.html", "2024/03/15/manifest.json", "2024/03/15/a.mp3")
        }
    finally:
        transport.close()
        client.close()
    assert heads["index.html"]["content-type"].startswith("text/html")
    assert heads["index.html"]["cache-control"] == "no-cache"
    assert heads["2024/03/15/manifest.json"]["content-type"] == "application/json"
    assert heads["2024/03/15/manifest.json"]["cache-control"] == "no-cache"
    assert heads["2024/03/15/a.mp3"]["content-type"] == "audio/mpeg"
    assert "cache-control" not in heads["2024/03/15/a.mp3"]


@pytest.mark.parametrize(
    "name",
    ["Pat O'Brien+1 (UK).wav", "Zoë & Ünal=ok;%41.wav", "日本語 通話.wav", "a~b_c-d.e!$@.wav"],
)
def test_keys_that_need_encoding_round_trip(
    rgw: RadosGateway, s3_bucket: str, tmp_path: Path, name: str
) -> None:
    """SigV4 signs the encoded path: a wrong encoding is a SignatureDoesNotMatch."""
    transport = rgw.transport(s3_bucket, "p r/é")
    path = tmp_path / "x.wav"
    path.write_bytes(name.encode() * 10)
    try:
        transport.put(
            path, f"2024/03/15/{name}", sha256=hashlib.sha256(path.read_bytes()).hexdigest()
        )
        assert transport.listdir("2024/03/15") == [name]
        assert transport.read_bytes(f"2024/03/15/{name}") == path.read_bytes()
    finally:
        transport.close()


def answer(status: int, code: str = "", **headers: str) -> Response:
    body = f"<Error><Code>{code}</Code></Error>".encode() if code else b""
    return Response(status, headers, body)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    date = "Thu, 03 Dec 2026 09:00:00 GMT"
    assert retry_after(answer(503, "SlowDown", **{"retry-after": "7"})) == 7.0
    in_90 = answer(503, **{"retry-after": "Thu, 03 Dec 2026 09:01:30 GMT", "date": date})
    assert retry_after(in_90) == 90.0
    assert retry_after(answer(503, **{"retry-after": "99999"})) == 3600.0  # capped
    assert retry_after(answer(503, **{"retry-after": "soon"})) is None
    assert retry_after(answer(503)) is None
    transport = S3Transport(
        endpoint="http://127.0.0.1:1",
        region=REGION,
        bucket="b",
        credentials=lambda: Credentials("a", "b"),
    )
    fault = transport._fault("put x", answer(503, "SlowDown", **{"retry-after": "7"}))
    assert isinstance(fault, TransientError) and fault.retry_after == 7.0


@pytest.mark.parametrize(
    ("response", "kind", "text"),
    [
        (answer(403, "AccessDenied"), DestinationDown, "AccessDenied at s3://b/"),
        (answer(404, "NoSuchBucket"), DestinationDown, "bucket b does not exist"),
        (answer(400, "KeyTooLongError"), PermanentError, "KeyTooLongError"),
        (answer(413), PermanentError, "413"),
        (answer(503, "SlowDown", **{"retry-after": "7"}), TransientError, "retry after 7 s"),
        (answer(500, "InternalError"), TransientError, "HTTP 500 InternalError"),
        (answer(400, "XAmzContentSHA256Mismatch"), TransientError, "XAmzContentSHA256Mismatch"),
        (answer(400, "BadDigest"), TransientError, "BadDigest"),
    ],
)
def test_faults_are_classified(response: Response, kind: type[Exception], text: str) -> None:
    transport = S3Transport(
        endpoint="http://127.0.0.1:1",
        region=REGION,
        bucket="b",
        credentials=lambda: Credentials("a", "b"),
    )
    fault = transport._fault("put x", response)
    assert type(fault) is kind and text in str(fault), fault


# --- the agent, configured for s3 -----------------------------------------------------------


def s3_destination(site: Site, rgw: S3Server, bucket: str) -> dict[str, Any]:
    secret = site.root / "s3-secret"
    secret.write_text(rgw.credentials.secret_access_key + "\n")
    secret.chmod(0o600)
    return {
        "type": "s3",
        "endpoint": rgw.endpoint,
        "bucket": bucket,
        "prefix": "pbx1",
        "addressing_style": "path",
        "access_key_id": rgw.credentials.access_key_id,
        "secret_access_key_file": str(secret),
    }


def run_agent(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return recsync(site.config_path, *args, timeout=120)


def call_names(minute: int, count: int) -> list[str]:
    """`count` outbound calls of 2024-03-15 at 10:<minute>, one a second."""
    uid = 1710497700 + minute * 60
    return [
        f"out-0612345{n:03d}-201-20240315-10{minute:02d}{n:02d}-{uid}.{n}.wav" for n in range(count)
    ]


def record(site: Site, names: list[str], first: int = 0) -> None:
    for n, name in enumerate(names, start=first):
        write_recording(site.spool_file(f"2024/03/15/{name}"), seconds=0.3, seed=n)


def agent_config(site: Site, rgw: S3Server, bucket: str) -> dict[str, dict[str, Any]]:
    """The config tables of an agent shipping the site's spool (any age) to the bucket."""
    return {
        "spool": {"path": str(site.spool), "backfill_days": 100_000},
        "destination": s3_destination(site, rgw, bucket),
    }


def shipped_entries(client: S3Client, day: str = "2024/03/15") -> list[dict[str, Any]]:
    """The day manifest's entries under pbx1/, each checked sha256-equal to its object."""
    manifest = json.loads(client.request("GET", f"pbx1/{day}/manifest.json").body)
    for entry in manifest["recordings"]:
        body = client.request("GET", f"pbx1/{entry['file']}").body
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    entries: list[dict[str, Any]] = manifest["recordings"]
    return entries


def test_run_once_ships_recordings_pages_and_status_to_the_bucket(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    names = call_names(15, 3)
    record(site, names)
    site.write_config(**agent_config(site, rgw, s3_bucket), index={"enabled": True})
    checked = run_agent(site, "check-config")
    assert f"destination s3 s3://{s3_bucket}/pbx1" in checked.stdout, checked.stdout
    first = run_agent(site, "run", "--once")
    assert first.returncode == 0, first.stderr
    client = rgw.client(s3_bucket)
    try:
        keys = {key: etag for key, etag in _objects(client)}
        recordings = sorted(k for k in keys if k.endswith(".wav"))
        assert len(recordings) == 3 and all(k.startswith("pbx1/2024/03/15/") for k in recordings)
        for key in ("pbx1/index.html", "pbx1/2024/03/15/index.html", "pbx1/status.json"):
            assert key in keys, sorted(keys)
        entries = shipped_entries(client)
        for entry in entries:
            head = client.request("HEAD", f"pbx1/{entry['file']}").headers
            assert head["x-amz-meta-uniqueid"] == entry["uniqueid"]
            assert head["x-amz-meta-sha256"] == entry["sha256"]
            assert unquote(head["x-amz-meta-started-at"]) == entry["started_at"]
        assert sorted(e["original"] for e in entries) == [f"2024/03/15/{n}" for n in names]
        doctor = run_agent(site, "doctor")
        assert f"✓ destination: s3 s3://{s3_bucket}/pbx1 writable" in doctor.stdout, doctor.stdout
        # Again: nothing is uploaded twice.
        assert run_agent(site, "run", "--once").returncode == 0
        again = dict(_objects(client))
        assert {k: again[k] for k in recordings} == {k: keys[k] for k in recordings}
    finally:
        client.close()


def _objects(client: S3Client) -> list[tuple[str, str]]:
    """(key, ETag + Last-Modified) of every object in the bucket."""
    out = []
    for key, _ in client.list_keys(""):
        head = client.request("HEAD", key).headers
        out.append((key, f"{head.get('etag')} {head.get('last-modified')}"))
    return out


def test_a_wrong_secret_pauses_the_agent_and_says_why(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    record(site, call_names(14, 1))
    tables = agent_config(site, rgw, s3_bucket)
    site.write_config(**tables)
    secret = Path(tables["destination"]["secret_access_key_file"])
    secret.write_text("wrong\n")
    run_agent(site, "run", "--once")
    status = run_agent(site, "status")
    assert "paused" in status.stdout and "SignatureDoesNotMatch" in status.stdout, status.stdout
    # Fixed: the next run ships it, no retry command needed.
    secret.write_text(rgw.credentials.secret_access_key)
    assert run_agent(site, "run", "--once").returncode == 0
    client = rgw.client(s3_bucket)
    try:
        assert [k for k, _ in client.list_keys("pbx1/2024/") if k.endswith(".wav")] != []
    finally:
        client.close()


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ({"type": "s3"}, "destination.bucket is required for destination.type = 's3'"),
        ({"type": "s3", "bucket": "bkt", "root": "/srv"}, "destination.root does not apply"),
        ({"type": "s3", "bucket": "Bad_Name"}, "destination.bucket: not an S3 bucket name"),
        ({"type": "s3", "bucket": "bkt", "prefix": "a/../b"}, "destination.prefix: not a plain"),
        ({"type": "s3", "bucket": "bkt", "sse": "aws:kms"}, "destination.kms_key_id is required"),
        ({"type": "s3", "bucket": "bkt", "access_key_id": "AK"}, "needs destination.secret_acc"),
        ({"type": "s3", "bucket": "bkt", "sse": "yes"}, "destination.sse"),
        ({"type": "s3", "bucket": "bkt", "endpoint": "s3.example.com"}, "expected https://host"),
        ({"type": "s3", "bucket": "bkt", "endpoint": "https://h/bkt"}, "expected https://host"),
    ],
)
def test_s3_config_errors_name_the_key(destination: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict({"destination": destination}, base=Path("/"))


def test_s3_config_defaults() -> None:
    config = from_dict(
        {"destination": {"type": "s3", "bucket": "bkt", "prefix": "/pbx1/"}}, base=Path("/")
    )
    d = config.destination
    assert (d.endpoint, d.region, d.prefix, d.addressing_style, d.sse) == (
        "",
        "us-east-1",
        "pbx1",
        "auto",
        "none",
    )
    assert d.where == "s3://bkt/pbx1"


def test_the_server_down_mid_run_then_back_ships_everything_once(
    site: Site, rgw: RadosGateway, s3_bucket: str, make_agent: Callable[..., Agent]
) -> None:
    """radosgw killed between passes and started again: every recording once, sha256-equal
    (passes an hour apart of made-up time: past every backoff)."""
    names = call_names(16, 4)
    config = site.config(**agent_config(site, rgw, s3_bucket))
    agent = make_agent(config, transport=open_transport(config.destination))
    record(site, names[:2])
    agent.run_until_idle()
    rgw.stop_gateway()
    try:
        record(site, names[2:], first=2)
        agent.run_until_idle()  # sees them, fails them (backoff), returns
        waiting = agent.store.rows("state != 'done'")
        assert len(waiting) == 2 and all("cannot reach" in (r.reason or "") for r in waiting)
    finally:
        rgw.start_gateway()
    now = later = time.time()
    while agent.run_once(later) is not None and later < now + 100 * 3600:
        later += 3600
    client = rgw.client(s3_bucket)
    try:
        entries = shipped_entries(client)
        keys = [k for k, _ in client.list_keys("pbx1/2024/03/15/") if k.endswith(".wav")]
    finally:
        client.close()
    assert sorted(e["original"] for e in entries) == [f"2024/03/15/{n}" for n in names]
    assert len(keys) == 4  # each once


HOSTILE = [
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "Evil\r\nX-Injected: 1",
    "Zoë \u202eevil\u202c 日本",
    "\x00\x1b[31mred",
    "A" * 2048,
]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_caller_names_travel_as_encoded_bounded_metadata(
    rgw: RadosGateway, s3_bucket: str, tmp_path: Path, name: str
) -> None:
    headers = meta_headers({"caller_name": name, "uniqueid": "1710497702.42"})
    value = headers["x-amz-meta-caller-name"]
    assert value.isascii() and value.isprintable() and len(value) <= META_VALUE_MAX
    assert name.startswith(unquote(value))  # a prefix of the name, cut between characters
    transport = rgw.transport(s3_bucket)
    client = rgw.client(s3_bucket)
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF" + b"\0" * 40)
    try:
        transport.put(
            path,
            "2024/03/15/a.wav",
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            metadata={"caller_name": name, "uniqueid": "1710497702.42"},
        )
        head = client.request("HEAD", "2024/03/15/a.wav").headers
    finally:
        transport.close()
        client.close()
    assert head["x-amz-meta-caller-name"] == value
    assert head["x-amz-meta-uniqueid"] == "1710497702.42"
    assert "x-injected" not in head


def test_state_rebuild_from_the_buckets_manifests_uploads_nothing_again(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    record(site, call_names(17, 3))
    site.write_config(**agent_config(site, rgw, s3_bucket))
    assert run_agent(site, "run", "--once").returncode == 0
    client = rgw.client(s3_bucket)
    try:
        before = dict(_objects(client))
        (site.state / "state.db").write_bytes(b"\0" * 4096)  # damaged beyond repair
        rebuilt = run_agent(site, "state", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "3 shipped recording(s)" in rebuilt.stdout, rebuilt.stdout
        again = run_agent(site, "run", "--once")
        assert again.returncode == 0, again.stderr
        after = dict(_objects(client))
    finally:
        client.close()
    recordings = [k for k in before if k.endswith(".wav")]
    assert len(recordings) == 3
    assert {k: after[k] for k in recordings} == {k: before[k] for k in recordings}
    assert sorted(k for k in after if k.endswith(".wav")) == sorted(recordings)


SHA = hashlib.sha256(b"recording").hexdigest()
CHECKSUM = base64.b64encode(bytes.fromhex(SHA)).decode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-amz-checksum-sha256": CHECKSUM, "x-amz-meta-sha256": "0" * 64}, SHA),  # the server's
        ({"x-amz-checksum-sha256": f"{CHECKSUM}-3", "x-amz-meta-sha256": SHA}, SHA),  # parts
        ({"x-amz-meta-sha256": SHA.upper()}, SHA),
        ({"x-amz-checksum-sha256": "not base64!"}, None),
        ({"x-amz-meta-sha256": "../" + SHA}, None),
        ({}, None),
    ],
)
def test_the_sha256_retention_reads_from_a_head(headers: dict[str, str], expected: str) -> None:
    assert object_sha256(Response(200, headers, b"")) == expected
