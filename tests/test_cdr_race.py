"""The CDR race with a real `recsync run` and a real MariaDB: the recording closes first,
its row comes later, or never, or the database goes away mid-run."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Site
from tests.support.cdr import cdr_row
from tests.support.daemon import Daemon, recsync, wait_for
from tests.support.mariadb import MariaDB
from tests.support.mixmonitor import write_recording


class Call:
    """A recording of today (inside the backfill window) and its CDR row."""

    def __init__(self, site: Site, n: int) -> None:
        self.at = datetime.now().replace(microsecond=0)
        self.uid = f"{int(self.at.timestamp())}.{n}"
        self.name = f"out-18005551234-1001-{self.at:%Y%m%d-%H%M%S}-{self.uid}.wav"
        self.rel = f"{self.at:%Y/%m/%d}/{self.name}"
        self.site = site

    def record(self) -> None:
        write_recording(self.site.spool_file(self.rel), seed=int(self.uid.split(".")[1]))

    def row(self, **values: Any) -> dict[str, Any]:
        return cdr_row(self.uid, at=self.at, recordingfile=self.name, **values)

    def entry(self) -> dict[str, Any] | None:
        manifest = self.site.dest / f"{self.at:%Y/%m/%d}" / "manifest.json"
        if not manifest.exists():
            return None
        entries = json.loads(manifest.read_text())["recordings"]
        return next((e for e in entries if e["original"] == self.rel), None)


@pytest.fixture
def mysql_config(site: Site, cdr_db: MariaDB) -> Any:
    cdr_db.create_user("recsync", "s3cret")
    secret = site.root / "cdr-password"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o600)

    def write(wait: float) -> Path:
        return site.write_config(
            spool={"reconcile_minutes": 600},
            cdr={
                "type": "mysql",
                "socket": cdr_db.socket,
                "user": "recsync",
                "password_file": str(secret),
                "wait_seconds": wait,
            },
        )

    return write


@pytest.fixture
def daemons(site: Site) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def start(site: Site, config: Path, daemons: list[Daemon]) -> Daemon:
    (site.spool / datetime.now().strftime("%Y/%m/%d")).mkdir(parents=True, exist_ok=True)
    daemon = Daemon(config, site.root / f"agent{len(daemons)}.log")
    daemons.append(daemon)
    return daemon


@pytest.mark.slow
def test_row_inserted_after_the_recording_closed_is_found(
    site: Site, cdr_db: MariaDB, mysql_config: Any, daemons: list[Daemon]
) -> None:
    start(site, mysql_config(wait=30), daemons)
    call = Call(site, 1)
    call.record()
    state_db = site.state / "state.db"
    wait_for(lambda: "waiting_cdr" in states(state_db), "the recording to wait for its CDR")
    cdr_db.insert_cdr(call.row(cnam="Late Row", cnum="1001"))
    wait_for(lambda: (call.entry() or {}).get("cdr") == "found", "the late row to be used")
    assert call.entry()["caller_name"] == "Late Row"  # type: ignore[index]


@pytest.mark.slow
def test_row_that_never_came_is_filled_in_when_it_does(
    site: Site, cdr_db: MariaDB, mysql_config: Any, daemons: list[Daemon]
) -> None:
    config = mysql_config(wait=1)
    daemon = start(site, config, daemons)
    call = Call(site, 2)
    call.record()
    wait_for(lambda: call.entry() is not None, "the recording to ship without its CDR")
    assert call.entry()["cdr"] == "missing"  # type: ignore[index]
    assert daemon.stop() == 0

    cdr_db.insert_cdr(call.row(cnam="Finally"))
    assert recsync(config, "run", "--once").returncode == 0
    assert call.entry()["caller_name"] == "Finally"  # type: ignore[index]
    assert site.remote(call.rel).read_bytes() == (site.spool / call.rel).read_bytes()


@pytest.mark.slow
def test_database_stopped_mid_run_loses_nothing(
    site: Site, cdr_db: MariaDB, mysql_config: Any, daemons: list[Daemon]
) -> None:
    config = mysql_config(wait=1)
    daemon = start(site, config, daemons)
    calls = [Call(site, n) for n in (3, 4, 5)]
    cdr_db.stop()
    try:
        for call in calls:
            call.record()
        wait_for(lambda: all(c.entry() for c in calls), "every recording to ship anyway")
        status = json.loads(recsync(config, "status", "--json").stdout)
        assert status["cdr"]["state"] == "failing"
        assert status["counts"]["done"] == len(calls)
    finally:
        cdr_db.start()
    for call in calls:
        cdr_db.insert_cdr(call.row(cnam=f"Caller {call.uid}"))
    assert daemon.stop() == 0
    assert recsync(config, "run", "--once").returncode == 0
    for call in calls:
        assert call.entry()["caller_name"] == f"Caller {call.uid}"  # type: ignore[index]
        assert site.remote(call.rel).read_bytes() == (site.spool / call.rel).read_bytes()
    assert len(list(site.dest.rglob("*.wav"))) == len(calls)


def states(state_db: Path) -> str:
    """The recordings' states, comma-separated, read beside the daemon (WAL)."""
    if not state_db.exists():
        return ""
    conn = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)
    try:
        (value,) = conn.execute("SELECT group_concat(state) FROM recordings").fetchone()
    finally:
        conn.close()
    return str(value or "")
