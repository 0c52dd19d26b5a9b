"""Large recordings go up in parts, against the real Ceph RGW (tests/support/s3.py): the
upload id and finished parts are in the state db, a cut upload resumes without sending
its parts again, and uploads nothing will resume are aborted at start."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import Interrupted, TransientError
from agent.store.state import Store
from agent.store.uploads import UploadLedger
from agent.transport.s3 import S3Transport
from agent.transport.s3client import S3Client
from agent.transport.s3parts import MIB, multipart_etag, part_size
from tests.conftest import Site
from tests.support.mixmonitor import write_recording
from tests.support.s3 import REGION, RadosGateway
from tests.test_s3 import agent_config, call_names, record, shipped_entries

THRESHOLD = 5 * 10**6  # the smallest destination.multipart_threshold_mb allows
SIZE = 20 * MIB + 12345  # three parts of 8 MiB: 8 + 8 + 4


@pytest.fixture
def state_db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    Store.open(path).close()  # made and migrated, as the agent does before the ledger
    return path


@pytest.fixture
def client(rgw: RadosGateway, s3_bucket: str) -> Iterator[S3Client]:
    made = rgw.client(s3_bucket)
    yield made
    made.close()


Make = Callable[..., S3Transport]


@pytest.fixture
def make(rgw: RadosGateway, s3_bucket: str, state_db: Path) -> Iterator[Make]:
    made: list[S3Transport] = []

    def factory(*, ledger: bool = True, **options: Any) -> S3Transport:
        transport = S3Transport(
            endpoint=rgw.endpoint,
            region=REGION,
            bucket=s3_bucket,
            prefix="pbx1",
            credentials=lambda: rgw.credentials,
            addressing="path",
            multipart_threshold=THRESHOLD,
            uploads=UploadLedger(state_db) if ledger else None,
            **options,
        )
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        transport.close()


def big_file(path: Path, seed: int = 1, size: int = SIZE) -> str:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    path.write_bytes(data[:size])
    return hashlib.sha256(data[:size]).hexdigest()


def open_uploads(client: S3Client, prefix: str = "pbx1/") -> list[tuple[str, str]]:
    return list(client.list_uploads(prefix))


def part_events(state_db: Path) -> list[str]:
    with sqlite3.connect(state_db) as conn:
        rows = conn.execute(
            "SELECT detail FROM events WHERE event = 'multipart-part' ORDER BY id"
        ).fetchall()
    return [detail.rsplit(" ", 1)[1] for (detail,) in rows]


def noted(state_db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(state_db) as conn:
        return conn.execute("SELECT key, upload_id FROM multipart_uploads").fetchall()


def stop_before_part(n: int) -> Callable[[], bool]:
    """A should_stop that says stop before part `n` (put asks once before it begins,
    then before each part)."""
    asked = 0

    def should_stop() -> bool:
        nonlocal asked
        asked += 1
        return asked > n

    return should_stop


def fetched_sha(client: S3Client, key: str) -> str:
    answer = client.request("GET", key)
    assert answer.status == 200, answer.status
    return hashlib.sha256(answer.body).hexdigest()


def test_part_sizes_stay_within_s3s_limits() -> None:
    assert part_size(SIZE) == 8 * MIB
    assert part_size(5 * 10**12) // MIB * MIB == part_size(5 * 10**12)  # whole MiB
    assert -(-5 * 10**12 // part_size(5 * 10**12)) <= 10_000  # 5 TB: S3's largest object
    assert multipart_etag(["0" * 32, "f" * 32]) == (
        hashlib.md5(bytes(16) + b"\xff" * 16, usedforsecurity=False).hexdigest() + "-2"
    )
    assert multipart_etag(["not-an-md5"]) is None


def test_a_large_file_goes_up_in_parts_and_is_confirmed(
    make: Make, client: S3Client, state_db: Path, tmp_path: Path
) -> None:
    sha = big_file(tmp_path / "big.wav")
    transport = make()
    transport.put(tmp_path / "big.wav", "2024/03/15/big.wav", sha256=sha)
    head = client.request("HEAD", "pbx1/2024/03/15/big.wav")
    assert head.headers["etag"].strip('"').endswith("-3")  # three parts, joined by the server
    assert fetched_sha(client, "pbx1/2024/03/15/big.wav") == sha
    assert part_events(state_db) == ["1", "2", "3"]
    assert noted(state_db) == [] and open_uploads(client) == []
    # Below the threshold: one PUT, a plain MD5 ETag.
    small = big_file(tmp_path / "small.wav", size=THRESHOLD)
    transport.put(tmp_path / "small.wav", "2024/03/15/small.wav", sha256=small)
    assert "-" not in client.request("HEAD", "pbx1/2024/03/15/small.wav").headers["etag"]


def test_a_cut_upload_resumes_without_sending_its_parts_again(
    make: Make, client: S3Client, state_db: Path, tmp_path: Path
) -> None:
    sha = big_file(tmp_path / "big.wav")
    with pytest.raises(Interrupted):
        make().put(
            tmp_path / "big.wav", "2024/03/15/big.wav", sha256=sha, should_stop=stop_before_part(3)
        )
    assert part_events(state_db) == ["1", "2"]
    [(key, upload_id)] = open_uploads(client)
    assert noted(state_db) == [(key, upload_id)]  # the server's upload, noted for resuming

    again = make()
    again.probe()  # at start: a noted upload is not abandoned
    assert open_uploads(client) == [(key, upload_id)]
    again.put(tmp_path / "big.wav", "2024/03/15/big.wav", sha256=sha)
    assert part_events(state_db) == ["1", "2", "3"]  # parts 1 and 2 were not sent again
    assert fetched_sha(client, key) == sha
    assert open_uploads(client) == [] and noted(state_db) == []


def test_a_changed_file_or_an_upload_the_server_lost_starts_over(
    make: Make, client: S3Client, state_db: Path, tmp_path: Path
) -> None:
    local = tmp_path / "big.wav"
    first = big_file(local, seed=1)
    with pytest.raises(Interrupted):
        make().put(local, "2024/03/15/big.wav", sha256=first, should_stop=stop_before_part(2))
    [(key, _)] = open_uploads(client)

    changed = big_file(local, seed=2)  # re-prepared with other bytes (a late CDR's tags)
    make().put(local, "2024/03/15/big.wav", sha256=changed)
    assert fetched_sha(client, key) == changed
    assert open_uploads(client) == [] and noted(state_db) == []  # the old one aborted

    with pytest.raises(Interrupted):
        make().put(local, "2024/03/15/big.wav", sha256=changed, should_stop=stop_before_part(2))
    [(_, lost)] = open_uploads(client)
    assert client.request("DELETE", key, query={"uploadId": lost}).status == 204  # a lifecycle rule
    transport = make()
    with pytest.raises(TransientError, match="NoSuchUpload; the upload starts over"):
        transport.put(local, "2024/03/15/big.wav", sha256=changed)
    transport.put(local, "2024/03/15/big.wav", sha256=changed)  # the next try, from scratch
    assert fetched_sha(client, key) == changed
    assert open_uploads(client) == [] and noted(state_db) == []


def test_uploads_nothing_will_resume_are_aborted_at_start(
    make: Make, client: S3Client, state_db: Path, tmp_path: Path
) -> None:
    def begin(key: str) -> str:
        answer = client.request("POST", key, query={"uploads": ""})
        assert answer.status == 200
        return answer.body.decode().split("<UploadId>")[1].split("</UploadId>")[0]

    begin("pbx1/2024/03/15/crashed-before-it-was-noted.wav")
    others = {("pbx1/backup/tool.tar", begin("pbx1/backup/tool.tar"))}  # not a recording key
    others.add(("pbx2/2024/03/15/other-agent.wav", begin("pbx2/2024/03/15/other-agent.wav")))
    sha = big_file(tmp_path / "big.wav")
    with pytest.raises(Interrupted):
        make().put(
            tmp_path / "big.wav", "2024/03/15/big.wav", sha256=sha, should_stop=stop_before_part(1)
        )
    kept = ("pbx1/2024/03/15/big.wav", noted(state_db)[0][1])

    make(ledger=False).probe()  # doctor, the CLI: no ledger, nothing aborted
    assert len(open_uploads(client, "")) == 4

    make().probe()
    assert set(open_uploads(client, "")) == others | {kept}


def test_object_tags_and_bwlimit(make: Make, client: S3Client, tmp_path: Path) -> None:
    sha = big_file(tmp_path / "a.wav", size=1_000_000)
    transport = make(object_tags=True, bwlimit_kbps=16_000)  # 2 MB/s
    began = time.monotonic()
    transport.put(tmp_path / "a.wav", "2024/03/15/a.wav", sha256=sha)
    assert 0.3 <= time.monotonic() - began < 5  # 0.5 s less the first burst
    transport.write_bytes("2024/03/15/index.html", b"<html></html>")
    tags = client.request("GET", "pbx1/2024/03/15/a.wav", query={"tagging": ""}).body
    assert b"<Key>recsync</Key><Value>recording</Value>" in tags
    tags = client.request("GET", "pbx1/2024/03/15/index.html", query={"tagging": ""}).body
    assert b"<Key>recsync</Key><Value>index</Value>" in tags
    plain = make()  # off by default: B2 and R2 refuse tagging
    plain.put(tmp_path / "a.wav", "2024/03/15/b.wav", sha256=sha)
    tags = client.request("GET", "pbx1/2024/03/15/b.wav", query={"tagging": ""}).body
    assert b"<Tag>" not in tags


def test_the_agent_killed_mid_upload_resumes_one_object_no_orphan(
    site: Site, rgw: RadosGateway, s3_bucket: str, client: S3Client
) -> None:
    tables = agent_config(site, rgw, s3_bucket)
    tables["destination"]["multipart_threshold_mb"] = 5
    site.write_config(**tables)
    big, *small = call_names(0, 3)
    write_recording(site.spool_file(f"2024/03/15/{big}"), seconds=SIZE / 16000, seed=7)
    record(site, small, first=1)
    command = [sys.executable, "-m", "agent", "--config", str(site.config_path), "run", "--once"]
    killed = subprocess.run(
        command,
        env=os.environ | {"RECSYNC_CRASH_AT": "multipart:part-sent@2"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    [(key, _)] = open_uploads(client)
    state_db = site.state / "state.db"
    assert part_events(state_db) == ["1", "2"]

    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    entries = shipped_entries(client)  # each object sha256-equal to its manifest entry
    assert sorted(e["original"].rsplit("/", 1)[-1] for e in entries) == sorted([big, *small])
    assert part_events(state_db) == ["1", "2", "3"]  # resumed: the two parts not sent again
    assert open_uploads(client) == []
    assert client.request("HEAD", key).headers["etag"].strip('"').endswith("-3")
