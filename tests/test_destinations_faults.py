"""Two destinations, one real server among them, through `recsync run`: the server killed
mid-run, the local archive keeps shipping; once it is back, both have every recording
exactly once, sha256-equal."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Site
from tests.support.daemon import Daemon, recsync, wait_for
from tests.support.mixmonitor import write_recording
from tests.support.s3 import RadosGateway
from tests.support.sshd import Sshd
from tests.test_crash import Bucket, Folder
from tests.test_destinations import write_toml
from tests.test_s3 import s3_destination

DEADLINE = 30.0
TODAY = datetime.now()  # the watched folder: calls of today, as a PBX writes them


def call(n: int) -> str:
    return f"{TODAY:%Y/%m/%d}/out-18005551234-1001-{TODAY:%Y%m%d}-0815{n:02d}-1710497702.{n}.wav"


class Server:
    """The destination whose server the test stops and starts again."""

    def __init__(
        self,
        table: dict[str, Any],
        dest: Folder | Bucket,
        stop: Callable[[], None],
        start: Callable[[], None],
    ) -> None:
        self.table, self.dest, self.stop, self.start = table, dest, stop, start


@pytest.fixture(params=["sftp", "s3"])
def server(request: pytest.FixtureRequest, site: Site) -> Iterator[Server]:
    if request.param == "sftp":
        sshd: Sshd = request.getfixturevalue("sshd")
        root: Path = request.getfixturevalue("sftp_root")
        yield Server(sshd.destination(root), Folder(root), sshd.stop, sshd.start)
        sshd.start()  # the session's server, for the tests after this one
        return
    rgw: RadosGateway = request.getfixturevalue("rgw")
    bucket: str = request.getfixturevalue("s3_bucket")
    objects = Bucket(rgw, bucket, "pbx1/")
    running = [True]

    def stop() -> None:
        rgw.stop_gateway()
        running[0] = False

    def start() -> None:
        rgw.start_gateway()
        running[0] = True
        objects.client.close()  # its kept-alive connection died with the gateway
        objects.client = rgw.client(bucket)

    try:
        yield Server(s3_destination(site, rgw, bucket), objects, stop, start)
    finally:
        if not running[0]:
            rgw.start_gateway()
        objects.client.close()


def shas(site: Site, rels: list[str]) -> list[str]:
    return sorted(hashlib.sha256((site.spool / r).read_bytes()).hexdigest() for r in rels)


def record(site: Site, numbers: range) -> list[str]:
    rels = [call(n) for n in numbers]
    for n, rel in zip(numbers, rels, strict=True):
        write_recording(site.spool_file(rel), seconds=1, seed=n)
    return rels


def status(site: Site) -> dict[str, Any]:
    done = recsync(site.config_path, "status", "--json")
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


@pytest.mark.slow
def test_one_destination_down_mid_run_never_holds_up_the_other(site: Site, server: Server) -> None:
    archive = Folder(site.root / "archive")
    archive.root.mkdir()
    data: dict[str, Any] = site.data(spool={"backfill_days": 100_000})
    data["destination"] = {
        **server.table,
        "archive": {"type": "local", "root": str(archive.root)},
    }
    write_toml(site.config_path, data)
    # Today's folder is there before the agent starts, as on a PBX that recorded today:
    # a folder made while the watches are being refreshed may be seen by the next
    # reconcile only (minutes later).
    site.spool_file(call(0)).parent.mkdir(parents=True, exist_ok=True)

    daemon = Daemon(site.config_path, site.root / "agent.log")
    try:
        first = record(site, range(3))
        wait_for(lambda: server.dest.count() == archive.count() == 3, "both to ship", DEADLINE)
        server.stop()
        rest = record(site, range(3, 8))
        # The archive ships everything while the other destination's server is gone.
        try:
            wait_for(lambda: archive.count() == 8, "the archive to keep shipping", DEADLINE)
        except AssertionError as exc:
            rows = recsync(site.config_path, "list", "--destination", "archive").stdout
            log = daemon.text()[-3000:]
            raise AssertionError(f"{exc}; the archive's rows:\n{rows}\nthe log:\n{log}") from None
        if isinstance(server.dest, Folder):  # (a bucket cannot be listed while it is down)
            assert server.dest.count() == 3
        each = status(site)["destinations"]
        assert each["archive"]["backlog"] == 0
        assert each["archive"]["counts"]["done"] == 8
        # (The default's agent may still be retrying its transfer in-call: it has not
        # necessarily counted the new calls yet, but it has shipped none of them.)
        assert each["default"]["counts"]["done"] == 3
    finally:
        server.start()
        code = daemon.stop()
    assert code == 0, daemon.text()
    # Each agent's lines name its destination.
    assert "destination=archive event=shipped" in daemon.text()
    assert "destination=default event=shipped" in daemon.text()

    # Back: the default's waiting recordings go now (retried, not re-shipped at the archive).
    assert recsync(site.config_path, "retry", "--failed").returncode == 0
    done = recsync(site.config_path, "run", "--once", timeout=120)
    assert done.returncode == 0, done.stderr
    expected = shas(site, first + rest)
    for dest in (server.dest, archive):
        shipped = dest.shipped()
        assert len(shipped) == 8
        assert sorted(shipped.values()) == expected
        assert dest.leftovers() == []  # writes cut by the kill: swept once it answered
        entries = [e for m in dest.manifests() for e in json.loads(m)["recordings"]]
        assert sorted(e["original"] for e in entries) == sorted(first + rest)
    each = status(site)["destinations"]
    assert (each["default"]["backlog"], each["archive"]["backlog"]) == (0, 0)
    assert (each["default"]["counts"]["done"], each["archive"]["counts"]["done"]) == (8, 8)
