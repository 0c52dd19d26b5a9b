"""Presigned links: SigV4 query-string auth checked against AWS's published examples and
the real Ceph RGW (tests/support/s3.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.transport.s3client import Credentials, S3Client

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
