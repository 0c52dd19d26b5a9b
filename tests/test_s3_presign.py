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
from click.testing import CliRunner

from agent.cdr.sqlite import SqliteCdr
from agent.cli import cli
from agent.config import PRESIGN_MAX
from agent.daemon import Agent
from agent.errors import PermanentError
from agent.publish.webhook import Webhook
from agent.transport import open_transport
from agent.transport.retry import RetryingTransport
from agent.transport.s3 import S3Transport
from agent.transport.s3client import Credentials, S3Client
from tests.conftest import Site
from tests.support.cdr import SqliteCdrFile
from tests.support.crm import CrmServer
from tests.support.mixmonitor import write_recording
from tests.support.s3 import RadosGateway
from tests.test_destinations import write_toml
from tests.test_s3 import (
    agent_config,
    call_names,
    record,
    run_agent,
    s3_destination,
    shipped_entries,
)

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


# --- recsync url -------------------------------------------------------------------------


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, strict_parsing=True)


def test_recsync_url_by_uniqueid_and_by_path_downloads_the_recording(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    names = call_names(21, 2)
    record(site, names)
    # Another recording of the first call (same uniqueid): by uniqueid it is ambiguous.
    twin = f"in-201-0612345000-20240315-102100-{names[0].split('-')[-1]}"
    write_recording(site.spool_file(f"2024/03/15/{twin}"), seconds=0.3, seed=9)
    site.write_config(**agent_config(site, rgw, s3_bucket))
    shipped = run_agent(site, "run", "--once")
    assert shipped.returncode == 0, shipped.stderr
    client = rgw.client(s3_bucket)
    try:
        entries = {e["original"].rsplit("/", 1)[1]: e for e in shipped_entries(client)}
    finally:
        client.close()
    one = entries[names[1]]
    by_uniqueid = run_agent(site, "url", one["uniqueid"])
    assert by_uniqueid.returncode == 0, by_uniqueid.stderr
    url = by_uniqueid.stdout.strip()
    assert query_of(url)["X-Amz-Expires"] == ["3600"]  # the default: an hour
    assert hashlib.sha256(fetch(url)).hexdigest() == one["sha256"]

    first = entries[names[0]]
    ambiguous = run_agent(site, "url", first["uniqueid"])
    assert ambiguous.returncode == 1
    assert f"uniqueid '{first['uniqueid']}' has 2 shipped recordings" in ambiguous.stderr
    assert first["file"] in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    by_path = run_agent(site, "url", first["file"], "--expires", "90s")
    assert by_path.returncode == 0, by_path.stderr
    url = by_path.stdout.strip()
    assert query_of(url)["X-Amz-Expires"] == ["90"]
    assert hashlib.sha256(fetch(url)).hexdigest() == first["sha256"]


def test_recsync_url_of_a_recording_not_shipped_says_so(
    site: Site, rgw: RadosGateway, s3_bucket: str, make_agent: Callable[..., Agent]
) -> None:
    names = call_names(22, 1)
    record(site, names)
    cdr = SqliteCdrFile(site.root / "master.db")
    tables = agent_config(site, rgw, s3_bucket)
    tables["cdr"] = {"type": "sqlite", "path": str(cdr.path), "wait_seconds": 3600}
    site.write_config(**tables)
    config = site.config(**tables)
    agent = make_agent(
        config,
        transport=open_transport(config.destination),
        cdr=SqliteCdr(path=cdr.path, table="cdr"),
    )
    now = time.time()
    agent.start(now)
    agent.run_once(now)  # parsed, then waiting for a CDR row that never comes
    uniqueid = names[0].rsplit("-", 1)[1].removesuffix(".wav")
    answer = run_agent(site, "url", uniqueid)
    assert answer.returncode == 1 and answer.stdout == ""
    assert f"({uniqueid}) is waiting_cdr, not shipped" in answer.stderr, answer.stderr
    unknown = run_agent(site, "url", "1234567890.99")
    assert unknown.returncode == 1
    assert "no recording has uniqueid '1234567890.99'" in unknown.stderr
    assert "Traceback" not in answer.stderr + unknown.stderr


def s3_config(site: Site) -> Path:
    """An s3 destination nobody listens at: `url` signs offline, it never asks."""
    secret = site.root / "s3-secret"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    return site.write_config(
        destination={
            "type": "s3",
            "endpoint": "https://s3.example.com",
            "bucket": "calls",
            "prefix": "pbx1",
            "access_key_id": "AKID",
            "secret_access_key_file": str(secret),
        }
    )


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), ("600", 600), ("7d", 604800)],
)
def test_recsync_url_expires_takes_units(site: Site, given: str, seconds: int) -> None:
    s3_config(site)
    result = run_agent(site, "url", "2024/03/15/a b.wav", "--expires", given)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith("https://s3.example.com/calls/pbx1/2024/03/15/a%20b.wav?")
    query = query_of(url)
    assert query["X-Amz-Expires"] == [str(seconds)]
    assert query["X-Amz-Credential"][0].startswith("AKID/")


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("0", "'0' is 0 s: it must be 1 s to 7d (604800 s)"),
        ("8d", "'8d' is 691200 s: it must be 1 s to 7d (604800 s)"),
        ("604801", "'604801' is 604801 s"),
        ("1w", "'1w' is not a duration: say 90s, 30m, 1h, 2d or seconds"),
        ("1.5h", "'1.5h' is not a duration"),
        ("-5", "'-5' is not a duration"),
        ("", "'' is not a duration"),
    ],
)
def test_recsync_url_refuses_a_bad_expiry(site: Site, given: str, says: str) -> None:
    result = CliRunner().invoke(
        cli, ["--config", str(s3_config(site)), "url", "2024/03/15/a.wav", "--expires", given]
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--expires'" in result.stderr and says in result.stderr


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("2024/03/15/a.wav", "presigned links need destination.type = 's3' (it is 'local')"),
        ("1710497702.42", "presigned links need destination.type = 's3' (it is 'local')"),
    ],
)
def test_recsync_url_needs_an_s3_destination(site: Site, ref: str, says: str) -> None:
    site.write_config()
    result = run_agent(site, "url", ref)
    assert result.returncode == 1 and result.stdout == ""
    assert says in result.stderr and "Traceback" not in result.stderr


def test_recsync_url_refuses_a_path_out_of_the_root(site: Site) -> None:
    s3_config(site)
    result = run_agent(site, "url", "../other-pbx/2024/03/15/a.wav")
    assert result.returncode == 1 and result.stdout == ""
    assert "unsafe remote path" in result.stderr and "Traceback" not in result.stderr


# --- several destinations: --destination names the bucket's ----------------------------


def test_recsync_url_signs_at_the_named_destination(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    names = call_names(23, 1)
    record(site, names)
    data = site.data(spool={"backfill_days": 100_000})
    data["destination"]["archive"] = s3_destination(site, rgw, s3_bucket)
    write_toml(site.config_path, data)  # the first is local, the archive s3
    shipped = run_agent(site, "run", "--once")
    assert shipped.returncode == 0, shipped.stderr
    client = rgw.client(s3_bucket)
    try:
        (entry,) = shipped_entries(client)
    finally:
        client.close()

    first = run_agent(site, "url", entry["uniqueid"])
    assert first.returncode == 1 and first.stdout == ""
    assert (
        "presigned links need destination.type = 's3' (it is 'local');"
        " s3 destinations: archive (--destination NAME)"
    ) in first.stderr
    by_uniqueid = run_agent(site, "url", entry["uniqueid"], "--destination", "archive")
    assert by_uniqueid.returncode == 0, by_uniqueid.stderr
    assert hashlib.sha256(fetch(by_uniqueid.stdout.strip())).hexdigest() == entry["sha256"]
    by_path = run_agent(site, "url", entry["file"], "--destination", "archive")
    assert by_path.returncode == 0, by_path.stderr
    assert hashlib.sha256(fetch(by_path.stdout.strip())).hexdigest() == entry["sha256"]

    unknown = run_agent(site, "url", entry["file"], "--destination", "nas")
    assert unknown.returncode == 1
    assert "no destination named 'nas' (configured: default, archive)" in unknown.stderr
