"""Every call shows a duration: from the CDR when it has one, else from the audio itself,
read when the copy is prepared (WAV headers, the fixed rates of Asterisk's raw formats),
stored with the recording, in its manifest entry and on its day page with the day's total."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import TranscodeConfig
from agent.daemon import Agent
from agent.media.length import audio_seconds, wav_seconds
from agent.media.prepare import Recipe, prepare
from agent.publish.index import render_day, talk_seconds
from agent.spool.wavheader import wav_header
from tests.conftest import Site
from tests.support.mixmonitor import write_recording

NAME = "2024/03/15/in-201-2125550100-20240315-1015{n:02d}-1710497702.{n}.{fmt}"


@pytest.mark.parametrize("fmt", ["wav", "WAV", "gsm", "ulaw", "alaw", "sln", "g729"])
@pytest.mark.parametrize("seconds", [0.0, 1.3, 61.0])
def test_the_length_is_read_from_the_audio(tmp_path: Path, fmt: str, seconds: float) -> None:
    path = tmp_path / f"x.{fmt}"
    write_recording(path, seconds=seconds, fmt=fmt)
    found = audio_seconds(path, fmt)
    assert found is not None
    assert found == pytest.approx(seconds, abs=0.05)


def test_a_header_that_lies_is_capped_by_the_file_and_garbage_has_no_length(
    tmp_path: Path,
) -> None:
    head = wav_header("wav", 16000 * 3600)  # says an hour; the file holds a second
    assert wav_seconds(head + b"\0" * 16000, len(head) + 16000) == pytest.approx(1.0)
    assert wav_seconds(b"RIFF\0\0\0\0WAVEjunk") is None
    assert wav_seconds(b"<script>" * 10) is None
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"not an mp3 at all" * 10)
    assert audio_seconds(broken, "mp3") is None
    assert audio_seconds(tmp_path / "gone.wav", "wav") is None


@pytest.mark.parametrize("tags", [True, False], ids=["composed", "copied"])
def test_prepare_says_how_long_the_copy_plays(tmp_path: Path, tags: bool) -> None:
    src = tmp_path / "in-201-2125550100-20240315-101500-1710497700.1.wav"
    write_recording(src, seconds=2.5)
    recipe = Recipe(
        staging=tmp_path / "staging",
        tags=tags,
        transcode=TranscodeConfig(format="none", bitrate=16),
    )
    fields = {"caller_name": "A" * 2000}  # a big tag chunk after the audio changes nothing
    prepared = prepare(recipe, src=src, key="a", fields=fields, repair_header=False)
    assert prepared.seconds == pytest.approx(2.5, abs=0.01)


def test_talk_seconds_prefers_the_cdr_then_the_audio() -> None:
    assert talk_seconds({"billsec": 30, "duration": 40, "audio_seconds": 31.2}) == 30
    assert talk_seconds({"billsec": None, "duration": 40, "audio_seconds": 31.2}) == 40
    assert talk_seconds({"billsec": None, "duration": None, "audio_seconds": 31.6}) == 32
    assert talk_seconds({"audio_seconds": None}) is None
    assert talk_seconds({"audio_seconds": "12"}) is None  # a manifest's number only


def test_calls_without_a_cdr_show_their_audio_length_and_the_day_its_total(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    lengths = {1: 12.0, 2: 75.0, 3: 3600.0 + 5}
    for n, seconds in lengths.items():
        write_recording(site.spool_file(NAME.format(n=n, fmt="wav")), seconds=seconds, seed=n)
    write_recording(site.spool_file(NAME.format(n=4, fmt="sln")), seconds=4.0, seed=4)
    agent = make_agent(site.config(spool={"backfill_days": 100_000}, index={"enabled": True}))
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    manifest = json.loads((site.dest / "2024/03/15/manifest.json").read_text())
    found = {e["uniqueid"]: e["audio_seconds"] for e in manifest["recordings"]}
    assert found == {
        "1710497702.1": 12.0,
        "1710497702.2": 75.0,
        "1710497702.3": 3605.0,
        "1710497702.4": 4.0,
    }
    assert all(e["duration"] is None and e["cdr"] == "off" for e in manifest["recordings"])
    assert agent.store.get(1) is not None
    page = (site.dest / "2024/03/15/index.html").read_text()
    assert "4 recordings, 1 h 01 min in all" in page
    for shown in ("0:12", "1:15", "1:00:05", "0:04"):
        assert f">{shown}</td>" in page


def test_an_old_manifest_entry_without_a_length_still_renders() -> None:
    entry = {"file": "2024/03/15/a.wav", "uniqueid": "1.1", "billsec": None}
    page = render_day("2024/03/15", [entry], title="t", generated_at="g").decode()
    assert "1 recording</p>" in page
