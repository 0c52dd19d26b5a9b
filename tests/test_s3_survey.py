"""`recsync doctor` on an S3 destination: what the server does with recsync's headers,
learned from a probe object, and the clock. Two real servers, since neither does all:

- Ceph RGW (`rgw`): verifies Content-MD5, accepts and ignores x-amz-checksum-sha256,
  honours If-None-Match: *, keeps tags; refuses a signature 15 min off. The clock tests
  and the doctor run that says "ignored" use it.
- moto in server mode (`moto`): verifies neither x-amz-checksum-sha256 nor Content-MD5,
  but keeps the checksum sent and returns it on HEAD (x-amz-checksum-mode: ENABLED);
  honours If-None-Match: * and keeps tags. The put and doctor tests marked moto use it.
  No server here refuses a wrong x-amz-checksum-sha256, so "verified" is not seen.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agent.cli import cli
from agent.doctor import check_clock
from agent.transport.s3survey import Support, survey
from tests.conftest import Site
from tests.support.moto import MotoServer
from tests.support.s3 import RadosGateway, S3Server
from tests.test_s3 import agent_config


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def put_with_checksum(server: S3Server, bucket: str, body: bytes, checksum: str) -> int:
    client = server.client(bucket)
    try:
        answer = client.request(
            "PUT",
            "k.wav",
            body=body,
            headers={"x-amz-checksum-sha256": checksum, "x-amz-sdk-checksum-algorithm": "SHA256"},
        )
        return answer.status
    finally:
        client.close()


def returned_checksum(server: S3Server, bucket: str, key: str) -> str | None:
    client = server.client(bucket)
    try:
        head = client.request("HEAD", key, headers={"x-amz-checksum-mode": "ENABLED"})
    finally:
        client.close()
    assert head.status == 200, head
    return head.headers.get("x-amz-checksum-sha256")


def test_moto_keeps_a_wrong_checksum_as_sent_and_rgw_drops_it(
    moto: MotoServer, moto_bucket: str, rgw: RadosGateway, s3_bucket: str
) -> None:
    """Neither refuses a wrong x-amz-checksum-sha256 (the 200 is what both really do)."""
    wrong = sha256_b64(b"something else")
    assert put_with_checksum(moto, moto_bucket, b"the body", wrong) == 200
    assert returned_checksum(moto, moto_bucket, "k.wav") == wrong
    assert put_with_checksum(rgw, s3_bucket, b"the body", wrong) == 200
    assert returned_checksum(rgw, s3_bucket, "k.wav") is None


def test_a_put_leaves_its_sha256_where_the_server_keeps_one(
    moto: MotoServer, moto_bucket: str, tmp_path: Path
) -> None:
    recording = tmp_path / "a.wav"
    recording.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    digest = hashlib.sha256(recording.read_bytes())
    transport = moto.transport(moto_bucket, "pbx1")
    try:
        transport.put(recording, "2024/03/15/a.wav", sha256=digest.hexdigest())
    finally:
        transport.close()
    stored = returned_checksum(moto, moto_bucket, "pbx1/2024/03/15/a.wav")
    assert stored == base64.b64encode(digest.digest()).decode()


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("rgw", Support(checksum="ignored", md5=True, conditional=True, tagging=True)),
        ("moto", Support(checksum="stored", md5=False, conditional=True, tagging=True)),
    ],
)
def test_the_survey_learns_what_each_server_does_and_leaves_nothing(
    request: pytest.FixtureRequest, server_name: str, expected: Support
) -> None:
    server: S3Server = request.getfixturevalue(server_name)
    bucket = server.new_bucket(request.node.name)
    transport = server.transport(bucket, "pbx1")
    client = server.client(bucket)
    try:
        assert survey(transport) == expected
        assert list(client.list_keys("")) == []  # the probe object is gone
    finally:
        transport.close()
        client.close()


def doctor_lines(config: Path) -> tuple[Result, dict[str, str]]:
    """doctor's result, and check name -> its line for every ✓ / ! / ✗ line."""
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"])
    lines = {
        line.split(":")[0][2:]: line for line in result.output.splitlines() if line[:1] in "✓!✗"
    }
    return result, lines


def s3_config(site: Site, server: S3Server, bucket: str, **destination: Any) -> Path:
    tables = agent_config(site, server, bucket)
    tables["destination"] |= destination
    return site.write_config(**tables)


def test_doctor_on_rgw_says_the_checksum_is_ignored(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    result, lines = doctor_lines(s3_config(site, rgw, s3_bucket))
    assert result.exit_code == 0, result.output
    assert lines["s3 checksum"] == (
        "✓ s3 checksum: x-amz-checksum-sha256 ignored: Content-MD5 is the check"
    )
    assert lines["s3 conditional write"].startswith(
        "✓ s3 conditional write: If-None-Match: * refused on an existing key"
    )
    assert lines["s3 tagging"] == "✓ s3 tagging: kept (x-amz-tagging, read back with ?tagging)"
    assert lines["s3 clock"].startswith("✓ s3 clock: within 60 s of the server's")
    client = rgw.client(s3_bucket)
    try:
        assert list(client.list_keys("")) == []  # the destination probe's and the survey's
    finally:
        client.close()


def test_doctor_on_moto_says_stored_not_verified(
    site: Site, moto: MotoServer, moto_bucket: str
) -> None:
    result, lines = doctor_lines(s3_config(site, moto, moto_bucket))
    assert result.exit_code == 0, result.output
    assert lines["s3 checksum"] == (
        "✓ s3 checksum: x-amz-checksum-sha256 stored, not verified (a wrong one is kept),"
        " and Content-MD5 is not verified either: the ETag read back is the check"
    )


def test_no_s3_lines_for_a_folder_destination(site: Site) -> None:
    result, lines = doctor_lines(site.write_config())
    assert result.exit_code == 0, result.output
    assert not [name for name in lines if name.startswith("s3 ")]


def test_a_server_that_keeps_no_tags_warns_when_object_tags_is_on() -> None:
    from agent.doctor import support_checks

    support = Support(checksum="ignored", md5=True, conditional=False, tagging=False)
    checks = {c.name: c for c in support_checks(support, object_tags=True)}
    assert checks["s3 tagging"].warning and checks["s3 tagging"].ok
    assert checks["s3 tagging"].advice == ["set destination.object_tags = false"]
    assert "start no second agent" in checks["s3 conditional write"].detail
    off = {c.name: c for c in support_checks(support, object_tags=False)}
    assert not off["s3 tagging"].warning


def skewed(offset: timedelta) -> Any:
    return lambda: datetime.now(UTC) + offset


@pytest.mark.parametrize(
    ("offset", "ok", "warning", "text"),
    [
        (timedelta(seconds=0), True, False, r"within 60 s of the server's \([+-]?[01] s\)"),
        (timedelta(minutes=5), True, True, r"clock is 30\d s ahead of the server's"),
        (timedelta(minutes=-5), True, True, r"clock is 30\d s behind the server's"),
        (timedelta(hours=-1), False, False, r"clock is 360\d s behind the server's: S3 refuses"),
    ],
)
def test_clock_skew_warns_past_a_minute_and_fails_past_15(
    rgw: RadosGateway, s3_bucket: str, offset: timedelta, ok: bool, warning: bool, text: str
) -> None:
    """A clock an hour off is still measured: RGW's refusal of the signature has a Date."""
    transport = rgw.transport(s3_bucket, clock=skewed(offset))
    try:
        check = check_clock(transport)
    finally:
        transport.close()
    assert (check.ok, check.warning) == (ok, warning), check
    assert check.name == "s3 clock"
    assert re.search(text, check.detail), check.detail
    assert bool(check.advice) == (offset != timedelta(0))
    assert all("timedatectl" in line for line in check.advice)
