"""A second S3 server for the tests: moto's server mode (`python -m moto.server`, from the
test extras), one process per session on 127.0.0.1, for what Ceph RGW does not do.

What moto 5 does, found by asking it (tests/test_s3_survey.py keeps it so): it keeps an
x-amz-checksum-sha256 sent with x-amz-sdk-checksum-algorithm and returns it on a HEAD with
x-amz-checksum-mode: ENABLED, but verifies neither it nor Content-MD5 (a wrong one is
stored as it came); it honours If-None-Match: * (412) and keeps tags. It checks no
signature, so it stands in for no test of credentials.
"""

from __future__ import annotations

import atexit
import importlib.util
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.transport.s3client import Credentials
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support.servers import free_port, require, terminate

START_TIMEOUT = 30.0


class MotoServer(S3Server):
    def __init__(self) -> None:
        self.credentials = Credentials(ACCESS_KEY, SECRET_KEY)
        self.log = Path(tempfile.mkstemp(prefix="recsync-moto-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self, attempts: int = 3) -> None:
        """Start it; a port taken between free_port() and the bind gets another."""
        for attempt in range(attempts):
            port = free_port()
            self.endpoint = f"http://127.0.0.1:{port}"
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_http():
                return
            self.stop()
            if attempt == attempts - 1:
                raise RuntimeError(f"moto did not start: {self.log.read_text()[-2000:]}")

    def _wait_http(self) -> bool:
        """True once it answers; False when the process ended (its port was taken)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while self.process.poll() is None:
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()  # noqa: S310 - ours
                return True
            except urllib.error.HTTPError:
                return True  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, timeout=5)
            self.process = None

    def close(self) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """The session's second S3 server (moto in server mode on 127.0.0.1)."""
    require(
        [] if importlib.util.find_spec("moto") else ["moto"],
        "moto's S3 server",
        "pip install -e '.[test]' (scripts/test does)",
    )
    server = MotoServer()
    atexit.register(server.close)
    try:
        server.start()
        yield server
    finally:
        server.close()
        atexit.unregister(server.close)


@pytest.fixture
def moto_bucket(moto: MotoServer, request: pytest.FixtureRequest) -> str:
    return moto.new_bucket(request.node.name)
