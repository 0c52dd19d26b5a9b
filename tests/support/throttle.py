"""A throttling HTTP proxy in front of a real S3 server: the requests a rule picks are
answered 503 SlowDown with Retry-After, the rest are relayed unchanged (method, target,
headers and body as they came, Host included, so SigV4 signatures still hold; the answer's
status, headers and body as the server gave them). Every request is recorded with when it
arrived and when it was answered, for tests to check how long a client waited.

Stdlib only: http.server with a thread per client connection, http.client upstream.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

RETRY_AFTER = 1  # seconds, as the 503 says
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP = {"transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int  # what the client was answered
    arrived: float  # time.monotonic() when the request had come in whole
    answered: float  # ... when its answer had gone out
    headers: dict[str, str]  # the request's, names in lower case


Rule = Callable[[str, str], bool]  # (method, path) -> answer this one 503?


def first(count: int) -> Rule:
    """The first `count` requests, whatever they are."""
    seen = [0]

    def rule(method: str, path: str) -> bool:
        seen[0] += 1
        return seen[0] <= count

    return rule


def every_other_put(*suffixes: str) -> Rule:
    """The 1st, 3rd, 5th ... PUT of each path ending in one of `suffixes`: every object's
    first try is refused and its retry goes through, however many uploads run at once."""
    puts: dict[str, int] = defaultdict(int)

    def rule(method: str, path: str) -> bool:
        if method != "PUT" or not path.split("?", 1)[0].endswith(suffixes):
            return False
        puts[path] += 1
        return puts[path] % 2 == 1

    return rule


def never(method: str, path: str) -> bool:
    """No request: a plain relay (with `tls`, a TLS front for the server)."""
    return False


class ThrottlingProxy:
    def __init__(self, upstream: str, rule: Rule, *, tls: ssl.SSLContext | None = None) -> None:
        """`upstream`: host:port of the real server; `tls`: serve HTTPS with this context."""
        self.upstream = upstream
        self.rule = rule
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = False  # server_close() joins every connection's thread
        if tls is not None:  # each connection's handshake on its own thread, at first read
            self.server.socket = tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        scheme = "https" if tls is not None else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="throttle")

    def throttles(self, method: str, path: str) -> bool:
        with self.lock:
            return self.rule(method, path)

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


def _handler(proxy: ThrottlingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the S3 client expects
        timeout = 30  # an idle client connection is closed, its thread ends
        upstream: http.client.HTTPConnection | None = None

        def relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            arrived = time.monotonic()
            if proxy.throttles(self.command, self.path):
                status = self.slow_down()
            else:
                status = self.forward(body)
            headers = {name.lower(): value for name, value in self.headers.items()}
            answered = time.monotonic()
            proxy.record(Seen(self.command, self.path, status, arrived, answered, headers))

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = relay

        def slow_down(self) -> int:
            self.send_response_only(503, "Slow Down")
            for name, value in (
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(SLOW_DOWN))),
                ("Retry-After", str(RETRY_AFTER)),
            ):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(SLOW_DOWN)
            self.wfile.flush()
            return 503

        def forward(self, body: bytes) -> int:
            if self.upstream is None:
                self.upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
            conn = self.upstream
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                conn.putheader(name, value)
            conn.endheaders(body or None)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response_only(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            if answer.getheader("transfer-encoding"):  # read whole: framed by length here
                self.send_header("Content-Length", str(len(data)))
            if answer.will_close:
                self.send_header("Connection", "close")
                self.close_connection = True
                conn.close()
                self.upstream = None
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            return answer.status

        def finish(self) -> None:
            super().finish()
            if self.upstream is not None:
                self.upstream.close()

        def log_message(self, format: str, *args: object) -> None:
            pass  # the record in `proxy.seen` is the log

    return Handler
