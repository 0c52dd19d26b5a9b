"""The shipped copy end to end: readable names from the CDR, tags, MP3, sidecars; the
spool original never changes."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import mutagen
import pytest

from agent.cdr.sqlite import SqliteCdr
from agent.daemon import Agent
from tests.conftest import Site, age
from tests.support.cdr import SqliteCdrFile, cdr_row
from tests.support.mixmonitor import write_recording

DAY = "2024/03/15"
IN = f"{DAY}/in-600-2125550100-20240315-101502-1710497853.51.wav"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cdr_file(site: Site) -> SqliteCdrFile:
    return SqliteCdrFile(site.root / "master.db")


@pytest.fixture
def build(site: Site, cdr_file: SqliteCdrFile, make_agent: Callable[..., Agent]) -> Any:
    def agent(**overrides: dict[str, Any]) -> Agent:
        config = site.config(
            spool={"backfill_days": 100_000},
            cdr={"type": "sqlite", "path": str(cdr_file.path), "wait_seconds": 5},
            tags={"enabled": True},
            **overrides,
        )
        return make_agent(config, cdr=SqliteCdr(path=cdr_file.path, table="cdr"))

    return agent


def run(agent: Agent, *, wait_out_cdr: bool = False) -> None:
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    if wait_out_cdr:
        agent.run_once(now + agent.pipeline.cdr_wait)


def entries(site: Site) -> dict[str, dict[str, Any]]:
    manifest = json.loads((site.dest / DAY / "manifest.json").read_text())
    return {e["original"]: e for e in manifest["recordings"]}


def bob(uid: str = "1710497853.51", **values: Any) -> dict[str, Any]:
    row = {
        "clid": '"Bob Buyer" <2125550100>',
        "src": "2125550100",
        "cnum": "2125550100",
        "cnam": "Bob Buyer",
        "dst": "600",
        "did": "2125550100",
    }
    return cdr_row(uid, **(row | values))


def test_readable_name_and_tags_from_the_cdr(
    site: Site, build: Any, cdr_file: SqliteCdrFile
) -> None:
    write_recording(site.spool_file(IN), seconds=2)
    before = sha(site.spool / IN)
    cdr_file.insert(bob())
    run(build())
    entry = entries(site)[IN]
    assert entry["file"] == f"{DAY}/101502_in_2125550100_Bob-Buyer_to_600_1710497853.51.wav"
    shipped = site.dest / entry["file"]
    assert sha(shipped) == entry["sha256"] and shipped.stat().st_size == entry["size"]
    tags = mutagen.File(shipped)
    assert tags is not None and tags.tags is not None
    assert "Bob Buyer" in str(tags.tags["TPE1"])
    assert "1710497853.51" in str(tags.tags.getall("COMM")[0])
    assert sha(site.spool / IN) == before  # the original is never written


def test_mp3_ships_smaller_with_its_own_size_and_sha(
    site: Site, build: Any, cdr_file: SqliteCdrFile
) -> None:
    write_recording(site.spool_file(IN), seconds=4)
    cdr_file.insert(bob())
    run(build(transcode={"format": "mp3", "bitrate": 16}))
    entry = entries(site)[IN]
    shipped = site.dest / entry["file"]
    assert entry["format"] == "mp3" and shipped.suffix == ".mp3"
    assert entry["size"] == shipped.stat().st_size < (site.spool / IN).stat().st_size / 6
    assert entry["sha256"] == sha(shipped)
    audio = mutagen.File(shipped)
    assert audio is not None and abs(audio.info.length - 4.0) < 0.072
    assert "Bob Buyer" in str(audio.tags["TPE1"])


def test_format_without_tags_gets_a_sidecar_that_a_late_cdr_updates(
    site: Site, build: Any, cdr_file: SqliteCdrFile
) -> None:
    ulaw = IN.replace(".wav", ".ulaw")
    write_recording(site.spool_file(ulaw), seconds=1, fmt="ulaw")
    age(site.spool / ulaw, 60)  # headerless: past its quiet period
    agent = build()
    run(agent, wait_out_cdr=True)  # no CDR row yet: ships with cdr missing
    entry = entries(site)[ulaw]
    sidecar = site.dest / f"{entry['file']}.json"
    assert json.loads(sidecar.read_text()) == entry
    assert sha(site.dest / entry["file"]) == sha(site.spool / ulaw)  # untouched bytes

    cdr_file.insert(bob())
    assert agent.fill_late_cdr(time.time() + 60) == 1
    updated = json.loads(sidecar.read_text())
    assert updated["caller_name"] == "Bob Buyer" and updated["file"] == entry["file"]


@pytest.mark.parametrize(
    "hostile",
    [
        "../../../etc/passwd",
        "<script>alert(1)</script>",
        "\u202egnp.exe",
        "a\x00b\x1b[2Jc",
        "%2e%2e%2f",
        "." * 40,
        "Zoë Ünicode 山田 " * 40,
    ],
)
def test_hostile_caller_name_stays_in_its_day_folder(
    site: Site, build: Any, cdr_file: SqliteCdrFile, hostile: str
) -> None:
    write_recording(site.spool_file(IN))
    cdr_file.insert(bob(cnam=hostile))
    run(build())
    entry = entries(site)[IN]
    assert entry["caller_name"] == hostile  # the data is kept verbatim ...
    name = PurePosixPath(entry["file"])  # ... the file name is made safe
    assert str(name.parent) == DAY and (site.dest / name).exists()
    assert len(name.name.encode()) <= 255
    assert "1710497853.51" in name.name
    assert not any(c in name.name for c in "/\\\x00\x1b\u202e%")


def test_two_recordings_with_the_same_name_both_arrive(site: Site, build: Any) -> None:
    # A template without the uniqueid: conference participants would collide.
    first = f"{DAY}/800-800-always-20240315-101502-1710497702.42.wav"
    second = f"{DAY}/800-800-always-20240315-101502-1710497702.43.wav"
    write_recording(site.spool_file(first), seed=1)
    write_recording(site.spool_file(second), seed=2)
    run(build(naming={"template": "{date}_{kind}_{dst}"}), wait_out_cdr=True)
    got = entries(site)
    assert {got[first]["file"], got[second]["file"]} == {
        f"{DAY}/20240315_conf_800.wav",
        f"{DAY}/20240315_conf_800-2.wav",
    }
    assert sha(site.dest / got[first]["file"]) != sha(site.dest / got[second]["file"])
