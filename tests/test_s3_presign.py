"""Presigned links: SigV4 query-string auth checked against AWS's published examples and
the real Ceph RGW (tests/support/s3.py)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.daemon import Agent
from agent.errors import PermanentError
from agent.publish.webhook import Webhook
from agent.transport.retry import RetryingTransport
from agent.transport.s3 import S3Transport
from agent.transport.s3client import PRESIGN_MAX, Credentials, S3Client
from tests.conftest import Site
from tests.support.crm import CrmServer
from tests.support.s3 import RadosGateway
from tests.test_s3 import agent_config, call_names, record, shipped_entries

# The example of AWS's "Signature Calculations for the Authorization Header" and
# "Authenticating Requests: Using Query Parameters" pages.
AWS_EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def aws_example_client(credentials: Credentials = AWS_EXAMPLE) -> S3Client:
    return S3Client(
        endpoint="https://s3.amazonaws.com",
        region="us-east-1",
        bucket="examplebucket",
        credentials=lambda: credentials,
        addressing="virtual",
        clock=lambda: datetime(2013, 5, 24, tzinfo=UTC),
    )


def test_a_signed_header_matches_awss_example() -> None:
    client = aws_example_client()
    headers = client._sign("GET", "/test.txt", "", {"range": "bytes=0-9"}, EMPTY_SHA256)
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        " SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        " Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("https://s3.example.com:443", "s3.example.com"),
        ("http://s3.example.com:80", "s3.example.com"),
        ("https://s3.example.com:8443", "s3.example.com:8443"),
        ("http://127.0.0.1:7480", "127.0.0.1:7480"),
    ],
)
def test_the_signed_host_is_the_one_clients_send(endpoint: str, host: str) -> None:
    """http.client and browsers leave a default port out of Host: so does the signature."""
    client = S3Client(endpoint=endpoint, region="r", bucket="b", credentials=lambda: AWS_EXAMPLE)
    assert client.host == host


def test_a_presigned_url_matches_awss_example() -> None:
    assert aws_example_client().presign("GET", "test.txt", 86400) == (
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_a_session_token_is_signed_into_the_query() -> None:
    token = "FwoGZXIvYXdzEB+/token=="
    with_token = Credentials(AWS_EXAMPLE.access_key_id, AWS_EXAMPLE.secret_access_key, token)
    url = aws_example_client(with_token).presign("GET", "test.txt", 60)
    query = parse_qs(urlsplit(url).query, strict_parsing=True)
    assert query["X-Amz-Security-Token"] == [token]
    assert "FwoGZXIvYXdzEB%2B%2Ftoken%3D%3D" in url  # encoded: "+" would read as a space
    plain = parse_qs(urlsplit(aws_example_client().presign("GET", "test.txt", 60)).query)
    assert query["X-Amz-Signature"] != plain["X-Amz-Signature"]


@pytest.mark.parametrize("seconds", [0, -1, PRESIGN_MAX + 1])
def test_an_expiry_sigv4_cannot_sign_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match="expiry must be 1 to 604800 s"):
        aws_example_client().presign("GET", "test.txt", seconds)


def test_an_unsafe_remote_path_is_not_signed() -> None:
    transport = S3Transport(
        endpoint="http://127.0.0.1:1",
        region="us-east-1",
        bucket="b",
        prefix="pbx1",
        credentials=lambda: AWS_EXAMPLE,
    )
    with pytest.raises(PermanentError, match="unsafe remote path"):
        transport.presign("../other/x.wav", 60)


# --- against the real RGW ----------------------------------------------------------------


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - the test's own
        data: bytes = answer.read()
    return data


def refused(url: str) -> int:
    """The HTTP status of a request the server refuses."""
    with pytest.raises(urllib.error.HTTPError) as caught:
        fetch(url)
    caught.value.close()
    return caught.value.code


@pytest.mark.parametrize(
    "name", ["a.wav", "Pat O'Brien+1 (UK).wav", "日本語 通話 %41=;.wav", "a~b_c-d.e!$@.wav"]
)
def test_a_presigned_url_downloads_the_exact_bytes(
    rgw: RadosGateway, s3_bucket: str, tmp_path: Path, name: str
) -> None:
    """No credentials with the GET: the URL alone is the permission (keys that need
    encoding too, under a prefix)."""
    transport = rgw.transport(s3_bucket, "p r/é")
    path = tmp_path / "x.wav"
    path.write_bytes(hashlib.sha256(name.encode()).digest() * 4000)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        transport.put(path, f"2024/03/15/{name}", sha256=sha256)
        url = transport.presign(f"2024/03/15/{name}", 60)
    finally:
        transport.close()
    assert hashlib.sha256(fetch(url)).hexdigest() == sha256


def test_a_url_past_its_expiry_is_refused(rgw: RadosGateway, s3_bucket: str) -> None:
    """Signed by a clock two hours back: within its hour it works, past it the server
    says 403."""

    def two_hours_ago() -> datetime:
        return datetime.now(UTC) - timedelta(hours=2)

    transport = rgw.transport(s3_bucket)
    old = rgw.transport(s3_bucket, clock=two_hours_ago)
    try:
        transport.write_bytes("2024/03/15/a.wav", b"RIFF")
        assert fetch(old.presign("2024/03/15/a.wav", 3 * 3600)) == b"RIFF"
        assert refused(old.presign("2024/03/15/a.wav", 3600)) == 403
    finally:
        transport.close()
        old.close()


def test_a_tampered_url_is_refused(rgw: RadosGateway, s3_bucket: str) -> None:
    transport = rgw.transport(s3_bucket)
    try:
        transport.write_bytes("2024/03/15/a.wav", b"RIFF")
        transport.write_bytes("2024/03/15/b.wav", b"secret")
        url = transport.presign("2024/03/15/a.wav", 60)
    finally:
        transport.close()
    flipped = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert refused(flipped) == 403
    assert refused(url.replace("/a.wav?", "/b.wav?")) == 403  # another object
    assert refused(url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")) == 403
    assert fetch(url) == b"RIFF"


# --- webhooks with a download link ---------------------------------------------------------


def amz_date(url: str) -> datetime:
    value = parse_qs(urlsplit(url).query)["X-Amz-Date"][0]
    return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def test_each_webhook_carries_a_fresh_link_to_the_recording(
    site: Site,
    rgw: RadosGateway,
    s3_bucket: str,
    crm: CrmServer,
    make_agent: Callable[..., Agent],
) -> None:
    """The CRM downloads each recording from its event's link alone; an event refused
    once and sent again carries a link signed at the retry."""
    shift = timedelta(0)

    def clock() -> datetime:
        return datetime.now(UTC) + shift

    config = site.config(**agent_config(site, rgw, s3_bucket), webhook={"presign_seconds": 600})
    agent = make_agent(
        config,
        transport=RetryingTransport(rgw.transport(s3_bucket, "pbx1", clock=clock)),
        webhook=Webhook(url=f"{crm.base}/hooks", secret=None, timeout=5),
    )
    record(site, call_names(20, 2))
    crm.answer(500)  # the first delivery: try again later
    agent.run_until_idle()
    first = json.loads(crm.wait_for(1)[0].body)
    shift = timedelta(seconds=120)  # the retry is signed two minutes later
    assert agent.outbox is not None and agent.outbox.deliver(time.time() + 3600) == 2
    sent = [json.loads(r.body) for r in crm.wait_for(3)]
    client = rgw.client(s3_bucket)
    try:
        shipped = {e["file"]: e["sha256"] for e in shipped_entries(client)}
    finally:
        client.close()
    delivered = sent[1:]
    assert sorted(e["recording"]["file"] for e in delivered) == sorted(shipped)
    for event in delivered:
        url = event["download_url"]
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["600"]
        assert hashlib.sha256(fetch(url)).hexdigest() == shipped[event["recording"]["file"]]
    retried = next(e for e in delivered if e["id"] == first["id"])
    assert amz_date(retried["download_url"]) - amz_date(first["download_url"]) >= timedelta(
        seconds=119
    )
