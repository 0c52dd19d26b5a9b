"""A real S3 server for the tests: Ceph's RADOS Gateway on a throwaway one-node cluster
(a monitor, one OSD on the in-memory memstore, radosgw with the beast frontend) in a temp
dir, started once per session (`tests/support/ceph-rgw-up.sh`, from the team's notes)
and killed at the end. Each test gets its own bucket.

What RGW (Ceph 16, Debian 12) checks for real: SigV4 signatures, x-amz-content-sha256,
Content-MD5 (BadDigest), conditional PUT. It accepts and ignores x-amz-checksum-sha256.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.transport.s3 import S3Transport
from agent.transport.s3client import Credentials, S3Client
from tests.support.servers import free_port, require

SCRIPT = Path(__file__).with_name("ceph-rgw-up.sh")
PROGRAMS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
ACCESS_KEY = "RECSYNCTESTKEY000000"
SECRET_KEY = "recsync-test-secret-0000000000000000000000"
REGION = "us-east-1"
START_TIMEOUT = 90.0
_names = itertools.count(1)


class S3Server:
    """What the tests ask of any S3 server of theirs: a client, a fresh bucket, a transport."""

    endpoint: str
    credentials: Credentials

    def client(self, bucket: str, credentials: Credentials | None = None) -> S3Client:
        creds = credentials or self.credentials
        return S3Client(
            endpoint=self.endpoint, region=REGION, bucket=bucket, credentials=lambda: creds
        )

    def new_bucket(self, hint: str) -> str:
        """A fresh, empty bucket named after `hint` (a test name)."""
        name = f"t{next(_names)}-{re.sub(r'[^a-z0-9]+', '-', hint.lower())}"[:63].rstrip("-")
        client = self.client(name)
        try:
            answer = client.request("PUT", "")
        finally:
            client.close()
        assert answer.status == 200, (answer.status, answer.body[:300])
        return name

    def transport(self, bucket: str, prefix: str = "", **options: Any) -> S3Transport:
        creds = options.pop("credentials", self.credentials)
        return S3Transport(
            endpoint=self.endpoint,
            region=REGION,
            bucket=bucket,
            prefix=prefix,
            credentials=lambda: creds,
            addressing="path",
            **options,
        )


class RadosGateway(S3Server):
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="recsync-rgw-"))
        self.port = free_port()
        self.mon_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.credentials = Credentials(ACCESS_KEY, SECRET_KEY)
        self._pids: list[int] = []

    def start(self, attempts: int = 3) -> None:
        """Start the cluster; a failed start (seen once: the OSD refused by its monitor,
        "wrong fsid") is retried from scratch on new ports."""
        for attempt in range(attempts):
            try:
                self._start()
                return
            except (RuntimeError, subprocess.SubprocessError):
                self.stop()
                if attempt == attempts - 1:
                    raise
                self.dir = Path(tempfile.mkdtemp(prefix="recsync-rgw-"))
                self.port, self.mon_port = free_port(), free_port()
                self.endpoint = f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        done = subprocess.run(
            [str(SCRIPT), str(self.dir), str(self.mon_port), str(self.port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self._pids = [int(p.read_text()) for p in (self.dir / "run").glob("*.pid")]
        if done.returncode != 0:
            raise RuntimeError(f"ceph-rgw-up.sh failed: {done.stderr[-2000:]}")
        self._wait_http()
        self._pids = [int(p.read_text()) for p in (self.dir / "run").glob("*.pid")]
        subprocess.run(
            ["radosgw-admin", "-c", str(self.dir / "ceph.conf"), "user", "create",
             "--uid=recsync", "--display-name=recsync",
             f"--access-key={ACCESS_KEY}", f"--secret={SECRET_KEY}"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip

    def stop_gateway(self) -> None:
        """Kill radosgw alone (the cluster and its data stay): the S3 server is down."""
        pid_file = self.dir / "run" / "client.rgw.a.pid"
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        self._pids.remove(pid)
        while _alive(pid):
            time.sleep(0.05)

    def start_gateway(self) -> None:
        subprocess.run(
            ["radosgw", "-c", str(self.dir / "ceph.conf"), "-n", "client.rgw.a"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        self._wait_http()
        self._pids.append(int((self.dir / "run" / "client.rgw.a.pid").read_text()))

    def _wait_http(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()  # noqa: S310 - ours
                return
            except OSError as exc:
                if "HTTP Error" in str(exc):
                    return  # it answers
                if time.monotonic() > deadline:
                    raise RuntimeError(f"radosgw did not answer on {self.endpoint}") from exc
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGKILL: the data is throwaway, and a graceful OSD stop writes its RAM out."""
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._pids = []
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1][:1]
    return state != "Z"  # a zombie (its parent, the script's shell, is gone) is dead


@pytest.fixture(scope="session")
def rgw() -> Iterator[RadosGateway]:
    """The session's S3 server (Ceph RGW on 127.0.0.1)."""
    require(
        [p for p in PROGRAMS if shutil.which(p) is None],
        "Ceph RADOS Gateway",
        "Debian packages radosgw ceph-mon ceph-osd; scripts/test installs them as root",
    )
    server = RadosGateway()
    atexit.register(server.stop)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)


@pytest.fixture
def s3_bucket(rgw: RadosGateway, request: pytest.FixtureRequest) -> str:
    return rgw.new_bucket(request.node.name)
