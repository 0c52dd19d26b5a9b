"""A CRM for tests: a real local HTTP server that records what it receives and can be
told to fail, to test the webhook and its outbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False  # wait (for release) instead of answering


class CrmServer(ThreadingHTTPServer):
    """Records every request; answers 200 unless told otherwise for the next requests."""

    daemon_threads = False  # server_close() joins the handler threads: none can leak
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.script += [Answer(status, tuple((headers or {}).items()))] * times

    def hang(self, times: int = 1) -> None:
        with self.lock:
            self.script += [Answer(200, hang=True)] * times

    def next_answer(self, request: Received) -> Answer:
        with self.lock:
            self.received.append(request)
            return self.script.pop(0) if self.script else Answer(200)

    def wait_for(self, count: int, within: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.01)
        raise AssertionError(f"expected {count} requests, got {len(self.received)}")


class _Handler(BaseHTTPRequestHandler):
    server: CrmServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        received = Received(
            method="POST",
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(length),
        )
        answer = self.server.next_answer(received)
        if answer.hang:
            self.server.release.wait(timeout=30)
        text = b'{"error": "told to fail"}' if answer.status >= 300 else b"ok"
        try:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
        except OSError:  # the client gave up (the timeout test): nobody to answer
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def crm() -> Iterator[CrmServer]:
    server = CrmServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="crm-server")
    thread.start()
    try:
        yield server
    finally:
        server.release.set()  # a hanging handler finishes
        server.shutdown()
        server.server_close()  # joins the handler threads
        thread.join(timeout=5)
