"""Several destinations, one preparation: the CDR is asked once per recording (one
connection for all), and where two destinations would ship the same bytes the second
links the first's staged copy instead of copying, tagging and hashing again."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.cdr import CdrQuery
from agent.cdr.shared import MISS_FRESH_SECONDS, Asker, SharedCdr
from agent.cli import _fleet
from agent.config import TranscodeConfig, from_dict
from agent.errors import TransientError
from agent.fleet import Fleet
from agent.media import once as once_module
from agent.media.once import KEPT_SECONDS, PreparedOnce
from agent.media.prepare import Prepared, Recipe
from agent.model import CallInfo
from tests.conftest import Site
from tests.support.cdr import SqliteCdrFile, call_fields, cdr_row
from tests.support.mixmonitor import write_recording

# --- the CDR, asked once -------------------------------------------------------------------


def query(n: int) -> CdrQuery:
    return CdrQuery(
        recordingfiles=(f"call-{n}.wav",),
        uniqueid=f"1710497702.{n}",
        started_at=datetime.fromisoformat("2024-03-15T10:15:02+01:00"),
        src="1001",
        dst="18005551234",
    )


class Ledger:
    """A CdrSource that answers from a dict and counts what it was asked."""

    name = "ledger"

    def __init__(self) -> None:
        self.rows: dict[CdrQuery, CallInfo] = {}
        self.asked: list[CdrQuery] = []
        self.failing = False
        self.closed = 0

    def lookup(self, query: CdrQuery) -> CallInfo | None:
        self.asked.append(query)
        if self.failing:
            raise TransientError("CDR database unreachable")
        return self.rows.get(query)

    def check(self) -> str:
        return "ledger"

    def advice(self) -> list[str]:
        return []

    def close(self) -> None:
        self.closed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def shared(ledger: Ledger, clock: Clock) -> SharedCdr:
    return SharedCdr(ledger, clock=clock)


def test_a_call_found_by_one_destination_is_not_asked_for_by_another(
    shared: SharedCdr, ledger: Ledger
) -> None:
    web, archive = shared.asker(), shared.asker()
    ledger.rows[query(1)] = CallInfo(caller_name="Front Desk")
    assert web.lookup(query(1)) == archive.lookup(query(1)) == CallInfo(caller_name="Front Desk")
    assert ledger.asked == [query(1)]
    assert archive.lookup(query(2)) is None  # another call is asked for
    assert ledger.asked == [query(1), query(2)]


def test_not_there_yet_is_lent_to_the_others_while_the_asker_keeps_polling(
    shared: SharedCdr, ledger: Ledger, clock: Clock
) -> None:
    web, archive = shared.asker(), shared.asker()
    assert web.lookup(query(1)) is None
    clock.now += 0.01
    assert archive.lookup(query(1)) is None  # web's answer, a moment old
    assert len(ledger.asked) == 1
    clock.now += 0.05
    assert web.lookup(query(1)) is None  # its own miss is no answer to itself
    assert len(ledger.asked) == 2
    ledger.rows[query(1)] = CallInfo(caller_name="Late")
    clock.now += 0.1
    assert web.lookup(query(1)) == CallInfo(caller_name="Late")
    assert archive.lookup(query(1)) == CallInfo(caller_name="Late")  # found: for everyone
    assert len(ledger.asked) == 3


def test_a_destination_that_stopped_asking_holds_up_no_other(
    shared: SharedCdr, ledger: Ledger, clock: Clock
) -> None:
    web, archive = shared.asker(), shared.asker()
    assert web.lookup(query(1)) is None  # ... and web pauses: it asks no more
    ledger.rows[query(1)] = CallInfo(caller_name="Late")
    clock.now += MISS_FRESH_SECONDS
    assert archive.lookup(query(1)) == CallInfo(caller_name="Late")


def test_an_error_is_not_kept_and_the_last_asker_closes_the_source(
    shared: SharedCdr, ledger: Ledger
) -> None:
    web, archive = shared.asker(), shared.asker()
    ledger.failing = True
    with pytest.raises(TransientError):
        web.lookup(query(1))
    with pytest.raises(TransientError):
        archive.lookup(query(1))  # asked again: an error is no "not there yet"
    assert len(ledger.asked) == 2
    web.close()
    web.close()
    assert ledger.closed == 0
    archive.close()
    assert ledger.closed == 1


# --- the copy, prepared once ---------------------------------------------------------------

SRC = "in-201-2125550100-20240315-101500-1710497700.1.wav"


def recipe(tmp_path: Path, name: str, *, transcode: str = "none") -> Recipe:
    return Recipe(
        staging=tmp_path / name / "staging",
        tags=True,
        transcode=TranscodeConfig(format=transcode, bitrate=16),
    )


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "spool" / SRC
    path.parent.mkdir()
    write_recording(path, seconds=1, seed=2)
    return path


def prepare_for(
    copies: PreparedOnce, recipe: Recipe, src: Path, key: str, **fields: Any
) -> Prepared:
    return copies.prepare(
        recipe, src=src, key=key, fields=call_fields(**fields), repair_header=False
    )


def kept(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.glob("*/staging/*.kept"))


def test_the_second_destination_links_the_first_ones_copy(tmp_path: Path, src: Path) -> None:
    web_recipe, archive_recipe = recipe(tmp_path, "web"), recipe(tmp_path, "archive")
    copies = PreparedOnce([web_recipe, archive_recipe])
    web = prepare_for(copies, web_recipe, src, "7")
    web.path.unlink()  # its upload is done before the archive comes to it
    assert kept(tmp_path) == ["7.wav.kept"]  # ... which it is kept for
    archive = prepare_for(copies, archive_recipe, src, "3")
    assert archive.path == tmp_path / "archive" / "staging" / "3.wav"  # its own name
    assert (archive.sha256, archive.size, archive.source) == (web.sha256, web.size, web.source)
    assert archive.sha256 == hashlib.sha256(archive.path.read_bytes()).hexdigest()
    assert os.stat(archive.path).st_nlink == 1  # taken by all: the spare link is gone
    assert kept(tmp_path) == []
    assert (copies.made, copies.linked) == (1, 1)


@pytest.mark.parametrize(
    "other",
    [
        {"transcode": "mp3"},  # another recipe
        {"fields": {"caller_name": "Known Later"}},  # the CDR answered it differently
    ],
    ids=["recipe", "fields"],
)
def test_what_would_differ_is_prepared_again(
    tmp_path: Path, src: Path, other: dict[str, Any]
) -> None:
    web_recipe = recipe(tmp_path, "web")
    archive_recipe = recipe(tmp_path, "archive", transcode=other.get("transcode", "none"))
    copies = PreparedOnce([web_recipe, archive_recipe])
    web = prepare_for(copies, web_recipe, src, "1")
    archive = prepare_for(copies, archive_recipe, src, "1", **other.get("fields", {}))
    assert os.stat(archive.path).st_ino != os.stat(web.path).st_ino
    assert archive.sha256 != web.sha256
    assert (copies.made, copies.linked) == (2, 0)
    if "transcode" in other:  # no other destination makes copies like either
        assert kept(tmp_path) == []


def test_a_copy_is_kept_a_minute_and_a_spool_file_changed_since_is_prepared_again(
    tmp_path: Path, src: Path
) -> None:
    clock = Clock()
    recipes = [recipe(tmp_path, name) for name in ("web", "archive", "spare")]
    copies = PreparedOnce(recipes, clock=clock)
    web = prepare_for(copies, recipes[0], src, "1")
    clock.now += KEPT_SECONDS  # the others are far behind, or paused
    archive = prepare_for(copies, recipes[1], src, "1")
    assert kept(tmp_path) == ["1.wav.kept"]  # the archive's own, for the spare destination
    assert archive.sha256 == web.sha256
    assert os.stat(archive.path).st_ino != os.stat(web.path).st_ino
    write_recording(src, seconds=2, seed=9)  # FreePBX wrote it again meanwhile
    spare = prepare_for(copies, recipes[2], src, "1")
    assert spare.sha256 != archive.sha256
    assert spare.sha256 == hashlib.sha256(spare.path.read_bytes()).hexdigest()
    assert (copies.made, copies.linked) == (3, 0)
    copies.close()
    assert kept(tmp_path) == []


def test_a_copy_nobody_came_for_is_removed_a_minute_later(tmp_path: Path, src: Path) -> None:
    clock = Clock()
    recipes = [recipe(tmp_path, "web"), recipe(tmp_path, "archive")]
    copies = PreparedOnce(recipes, clock=clock)
    prepare_for(copies, recipes[0], src, "1")
    copies.tidy()
    assert kept(tmp_path) == ["1.wav.kept"]
    clock.now += KEPT_SECONDS  # the archive is paused, and no other call comes
    copies.tidy()
    assert kept(tmp_path) == []


def test_a_copy_too_big_to_keep_is_linked_only_while_its_upload_holds_it(
    tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(once_module, "KEPT_BYTES", src.stat().st_size)  # the copy is bigger
    recipes = [recipe(tmp_path, name) for name in ("web", "archive", "spare")]
    copies = PreparedOnce(recipes)
    web = prepare_for(copies, recipes[0], src, "1")
    assert kept(tmp_path) == []
    archive = prepare_for(copies, recipes[1], src, "1")  # web's upload still holds it
    assert os.stat(archive.path).st_ino == os.stat(web.path).st_ino
    web.path.unlink()
    archive.path.unlink()
    spare = prepare_for(copies, recipes[2], src, "1")
    assert spare.sha256 == web.sha256 and (copies.made, copies.linked) == (2, 1)


def test_a_copy_being_made_is_waited_for_and_a_failed_one_made_again(
    tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipes = [recipe(tmp_path, "web"), recipe(tmp_path, "archive")]
    copies = PreparedOnce(recipes)
    started, release = threading.Event(), threading.Event()
    real = once_module.prepare

    def slow_then_failing(recipe: Recipe, **kwargs: Any) -> Prepared:
        if recipe.staging.parent.name == "web":
            started.set()
            assert release.wait(10)
            raise TransientError("local disk full while staging")
        return real(recipe, **kwargs)

    monkeypatch.setattr(once_module, "prepare", slow_then_failing)
    failed: list[BaseException] = []

    def web() -> None:
        try:
            prepare_for(copies, recipes[0], src, "1")
        except TransientError as exc:
            failed.append(exc)

    thread = threading.Thread(target=web)
    thread.start()
    assert started.wait(10)
    got: list[Prepared] = []
    archive = threading.Thread(target=lambda: got.append(prepare_for(copies, recipes[1], src, "1")))
    archive.start()
    release.set()
    thread.join(10)
    archive.join(10)
    assert [str(e) for e in failed] == ["local disk full while staging"]
    (made,) = got  # web's failure is web's: the archive made its own
    assert made.sha256 == hashlib.sha256(made.path.read_bytes()).hexdigest()
    assert (copies.made, copies.linked) == (1, 0)


# --- the fleet -----------------------------------------------------------------------------

DAY = "2024/03/15"


def call(n: int) -> str:
    return f"{DAY}/out-18005551234-1001-20240315-1015{n:02d}-1710497702.{n}.wav"


@pytest.fixture
def fleet_of(site: Site) -> Iterator[Callable[[dict[str, Any]], Fleet]]:
    made: list[Fleet] = []

    def build(data: dict[str, Any]) -> Fleet:
        made.append(_fleet(from_dict(data, base=site.root), watch=False))
        return made[-1]

    yield build
    for fleet in made:
        fleet.close()


def test_two_destinations_prepare_each_recording_once_and_ask_the_cdr_once(
    site: Site, fleet_of: Callable[[dict[str, Any]], Fleet]
) -> None:
    cdr = SqliteCdrFile(site.root / "master.db")
    rels = [call(n) for n in range(20)]
    for n, rel in enumerate(rels):
        write_recording(site.spool_file(rel), seconds=1, seed=n)
        cdr.insert(cdr_row(f"1710497702.{n}", cnam=f"Caller {n}"))
    data: dict[str, Any] = site.data(
        spool={"backfill_days": 100_000},
        cdr={"type": "sqlite", "path": str(cdr.path), "wait_seconds": 5},
        tags={"enabled": True},
    )
    (site.root / "archive").mkdir()
    data["destination"]["archive"] = {"type": "local", "root": str(site.root / "archive")}
    fleet = fleet_of(data)
    copies = fleet.primary.pipeline.copies
    assert copies is not None and fleet.agents[1].pipeline.copies is copies
    source = fleet.primary.pipeline.cdr
    fleet.run(once=True)
    shipped = [
        {p.name: p.read_bytes() for p in (root / DAY).glob("*.wav")}
        for root in (site.dest, site.root / "archive")
    ]
    assert len(shipped[0]) == len(rels) and shipped[0] == shipped[1]
    assert all(b"Caller" in data for data in shipped[0].values())  # the CDR's name, tagged
    assert (copies.made, copies.linked) == (len(rels), len(rels))
    assert isinstance(source, Asker) and source.shared.asked == len(rels)
    for agent in fleet.agents:  # every staged copy and link removed
        assert not any(agent.config.state.staging.iterdir())
