"""A stand-in for the AWS metadata endpoints, on 127.0.0.1: the EC2 instance metadata
service (IMDSv2 only: a token PUT, then token-bearing GETs) and a container credentials
endpoint (ECS/EKS) at /container. It records every request and hands out the keys it is
given; `fail` makes the next answers an error status."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.transport.s3client import Credentials

ROLES = "/latest/meta-data/iam/security-credentials/"
CONTAINER = "/container"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names


@dataclass
class Keys:
    access_key_id: str = "ASIAFAKEROLEKEY00001"
    secret_access_key: str = "fake-role-secret-0001"
    token: str | None = "fake-session-token-0001"
    expires: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(hours=6))

    def document(self) -> bytes:
        doc = {
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Expiration": self.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.token is not None:
            doc["Token"] = self.token
        return json.dumps(doc).encode()

    def credentials(self) -> Credentials:
        return Credentials(self.access_key_id, self.secret_access_key, self.token)


class MetadataServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: none can leak
    block_on_close = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.role = "recsync-role"
        self.keys = Keys()  # the instance role's
        self.container_keys: Keys | None = None  # the container's; None: the same keys
        self.delay = 0.0  # seconds each answer waits (threads overlap)
        self.seen: list[Seen] = []
        self.failures: list[int] = []  # statuses of the next answers
        self.tokens: set[str] = set()  # IMDSv2 session tokens handed out
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail(self, status: int, times: int = 1) -> None:
        with self.lock:
            self.failures += [status] * times

    def requests(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(seen.method, seen.path) for seen in self.seen]

    def answer(self, seen: Seen) -> tuple[int, bytes]:
        with self.lock:
            self.seen.append(seen)
            if self.failures:
                return self.failures.pop(0), b"told to fail"
            return self._route(seen)

    def _route(self, seen: Seen) -> tuple[int, bytes]:
        if seen.path == CONTAINER and seen.method == "GET":
            return 200, (self.container_keys or self.keys).document()
        if seen.path == "/latest/api/token" and seen.method == "PUT":
            if "x-aws-ec2-metadata-token-ttl-seconds" not in seen.headers:
                return 400, b"missing TTL"
            token = f"imds-token-{len(self.tokens) + 1}"
            self.tokens.add(token)
            return 200, token.encode()
        if seen.headers.get("x-aws-ec2-metadata-token") not in self.tokens:
            return 401, b"IMDSv2 only"  # what an instance with HttpTokens=required says
        if seen.path == ROLES:
            return 200, self.role.encode()
        if seen.path == ROLES + self.role:
            return 200, self.keys.document()
        return 404, b"not found"


class _Handler(BaseHTTPRequestHandler):
    server: MetadataServer

    def _serve(self) -> None:
        seen = Seen(
            self.command, self.path, {name.lower(): value for name, value in self.headers.items()}
        )
        status, body = self.server.answer(seen)
        time.sleep(self.server.delay)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(port: int = 0) -> Iterator[MetadataServer]:
    """A server on `port` (any free one by default), stopped on leaving."""
    server = MetadataServer(port)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="metadata")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    with serve() as server:
        yield server
