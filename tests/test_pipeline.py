"""The agent's main job, one pass at a time (`run_once`), against a real local destination."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent.errors import DestinationDown, TransientError
from agent.model import RecordingState
from agent.spool.wavheader import is_complete, read_layout
from tests.conftest import Site, age
from tests.support.faults import FlakyTransport
from tests.support.mixmonitor import BURST, MixMonitorWriter, audio, write_recording

DAY = "2024/03/15"
NAME = "out-18005551234-1001-20240315-101502-1710497702.42.wav"


def name(n: int, kind: str = "in") -> str:
    return f"{kind}-600-21255501{n:02d}-20240315-1015{n % 60:02d}-1710497702.{n}.wav"


def shipped_as(site: Site, rel: str) -> str:
    """The destination-relative name the recording at spool path `rel` shipped under."""
    return site.remote(rel).relative_to(site.dest).as_posix()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(folder).as_posix(): (sha(p), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def state_of(agent: Any, rel: str) -> tuple[str, str | None]:
    row = agent.store.by_stem(rel.rsplit(".", 1)[0])
    assert row is not None, rel
    return row.state, row.reason


def manifest(site: Site, day: str = DAY) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((site.dest / day / "manifest.json").read_text())
    return data


@pytest.fixture
def wide(site: Site) -> Any:
    """A config whose backfill window reaches back to 2024's sample names."""
    return site.config(spool={"backfill_days": 100_000})


def test_finished_recordings_ship_once_with_manifest(
    site: Site, make_agent: Any, wide: Any
) -> None:
    dated = site.spool_file(f"{DAY}/{NAME}")
    legacy = site.spool_file("OUT201-20240315-101502-1710497702.77.wav")
    write_recording(dated, seconds=2, seed=1)
    write_recording(legacy, seconds=1, seed=2)
    before = snapshot(site.spool)

    agent = make_agent(wide)
    agent.run_until_idle()

    # Readable names by the default template; the day folder from the name's date.
    readable = f"{DAY}/101502_out_1001_to_18005551234_1710497702.42.wav"
    assert shipped_as(site, f"{DAY}/{NAME}") == readable
    assert site.shipped() == sorted(
        [f"{DAY}/101502_legacy-out_201_1710497702.77.wav", readable, f"{DAY}/manifest.json"]
    )
    assert sha(site.remote(f"{DAY}/{NAME}")) == sha(dated)
    entries = {e["original"]: e for e in manifest(site)["recordings"]}
    assert manifest(site)["date"] == "2024-03-15"
    entry = entries[f"{DAY}/{NAME}"]
    assert entry["file"] == readable
    assert entry["kind"] == "out"
    assert entry["dst"] == "18005551234"
    assert entry["caller_number"] == "1001"
    assert entry["uniqueid"] == "1710497702.42"
    assert entry["sha256"] == sha(dated)
    assert entry["size"] == dated.stat().st_size
    assert entry["format"] == "wav"
    assert entry["cdr"] == "off"  # no CDR source: never looked for
    assert entry["started_at"].startswith("2024-03-15T10:15:02")
    assert entries["OUT201-20240315-101502-1710497702.77.wav"]["kind"] == "legacy-out"

    # Idempotent: a second run (new process, same state) ships nothing again.
    shipped = snapshot(site.dest)
    del shipped["status.json"]  # the heartbeat is rewritten by every run
    make_agent(wide).run_until_idle()
    again = snapshot(site.dest)
    del again["status.json"]
    assert again == shipped
    assert snapshot(site.spool) == before  # never modified, renamed or deleted


def test_open_growing_and_reopened_files_are_never_shipped(
    site: Site, make_agent: Any, wide: Any
) -> None:
    path = site.spool_file(f"{DAY}/{NAME}")
    agent = make_agent(wide)
    writer = MixMonitorWriter(path)
    agent.start(time.time())
    for burst in range(3):  # growing, header sizes 0, held open
        writer.write(audio(BURST, seed=burst))
        agent.pipeline.observe(f"{DAY}/{NAME}", time.time())
        agent.run_once(time.time())
        assert state_of(agent, f"{DAY}/{NAME}")[0] == "pending"
    assert site.shipped() == []

    writer.close()  # what the close-write event reports
    agent.pipeline.observe(f"{DAY}/{NAME}", time.time())
    agent.run_once(time.time())
    assert sha(site.remote(f"{DAY}/{NAME}")) == sha(path)
    first = sha(path)

    writer.reopen()  # pause/resume: the same file grows again
    writer.write(audio(BURST, seed=9))
    agent.pipeline.observe(f"{DAY}/{NAME}", time.time())
    agent.run_once(time.time())
    assert state_of(agent, f"{DAY}/{NAME}")[0] == "pending"
    assert sha(site.remote(f"{DAY}/{NAME}")) == first  # the shipped copy is not touched meanwhile

    writer.close()
    agent.pipeline.observe(f"{DAY}/{NAME}", time.time())
    agent.run_once(time.time())
    # A new version under the same remote name, one manifest entry.
    assert sha(site.remote(f"{DAY}/{NAME}")) == sha(path) != first
    row = agent.store.by_stem(f"{DAY}/{NAME}"[:-4])
    assert row.state == "done" and row.version == 2
    assert [e["original"] for e in manifest(site)["recordings"]] == [f"{DAY}/{NAME}"]


@pytest.mark.parametrize(
    ("rel", "make", "state", "reason"),
    [
        (f"{DAY}/{NAME}", "header-only", "skipped", "no audio"),
        (f"{DAY}/call-1001-in.wav", "finished", "skipped", "leg"),
        (f"{DAY}/greeting.wav", "finished", "quarantined", "does not match"),
        (f"{DAY}/out-1-2-20241332-101502-1.2.wav", "finished", "quarantined", "date"),
        (f"{DAY}/{NAME}", "symlink", "quarantined", "not a regular file"),
        (f"{DAY}/{NAME}", "fifo", "quarantined", "not a regular file"),
    ],
)
def test_files_that_must_not_ship_end_in_a_clear_state(
    site: Site, make_agent: Any, wide: Any, rel: str, make: str, state: str, reason: str
) -> None:
    path = site.spool_file(rel)
    if make == "header-only":
        MixMonitorWriter(path).close()
    elif make == "finished":
        write_recording(path)
    elif make == "symlink":
        target = site.root / "elsewhere.wav"
        write_recording(target)
        path.symlink_to(target)
    else:
        os.mkfifo(path)
    agent = make_agent(wide)
    agent.run_until_idle()
    got_state, got_reason = state_of(agent, rel)
    assert got_state == state
    assert reason in (got_reason or "")
    assert [f for f in site.shipped() if not f.endswith("manifest.json")] == []


def test_header_left_at_zero_by_a_crash_ships_repaired(
    site: Site, make_agent: Any, wide: Any
) -> None:
    path = site.spool_file(f"{DAY}/{NAME}")
    writer = MixMonitorWriter(path)
    writer.write(audio(BURST * 2, seed=3))
    writer.crash()  # Asterisk died: sizes stay 0
    original = path.read_bytes()
    agent = make_agent(wide)
    agent.run_until_idle()
    assert state_of(agent, f"{DAY}/{NAME}")[0] == "pending"  # could still be recording

    agent.run_once(time.time() + wide.spool.stale_seconds + 1)  # no writer came back
    shipped = (site.remote(f"{DAY}/{NAME}")).read_bytes()
    layout = read_layout(shipped)
    assert layout is not None and is_complete(layout, len(shipped))
    assert shipped[layout.data_offset :] == original[layout.data_offset :]
    assert path.read_bytes() == original  # only the staged copy was repaired


def test_vanished_before_shipping_is_quarantined_after_stays_done(
    site: Site, make_agent: Any, wide: Any
) -> None:
    early = site.spool_file(f"{DAY}/{name(1)}")
    late = site.spool_file(f"{DAY}/{name(2)}")
    writer = MixMonitorWriter(early)  # still recording: pending
    write_recording(late)
    agent = make_agent(wide)
    agent.run_until_idle()
    writer.crash()
    early.unlink()
    late.unlink()
    agent.pipeline.observe(f"{DAY}/{name(1)}", time.time())
    agent.pipeline.observe(f"{DAY}/{name(2)}", time.time())
    assert state_of(agent, f"{DAY}/{name(1)}") == ("quarantined", "vanished before it was shipped")
    assert state_of(agent, f"{DAY}/{name(2)}")[0] == "done"
    assert site.remote(f"{DAY}/{name(2)}").exists()


def test_mp3_replacing_a_shipped_wav_is_the_same_recording(
    site: Site, make_agent: Any, wide: Any
) -> None:
    wav = site.spool_file(f"{DAY}/{NAME}")
    write_recording(wav)
    agent = make_agent(wide)
    agent.run_until_idle()
    assert (site.remote(f"{DAY}/{NAME}")).exists()

    # An admin's post-recording script: convert, then delete the .wav.
    mp3 = wav.with_suffix(".mp3")
    mp3.write_bytes(b"ID3" + audio(4000, seed=5))
    age(mp3, 60)
    wav.unlink()
    agent.pipeline.observe(f"{DAY}/{NAME[:-4]}.mp3", time.time())
    agent.run_once(time.time())

    mp3_remote = shipped_as(site, f"{DAY}/{NAME[:-4]}.mp3")
    assert mp3_remote.endswith("1710497702.42.mp3")
    assert site.shipped() == sorted([mp3_remote, f"{DAY}/manifest.json"])
    assert sha(site.remote(f"{DAY}/{NAME[:-4]}.mp3")) == sha(mp3)
    (entry,) = manifest(site)["recordings"]
    assert entry["format"] == "mp3" and entry["original"] == f"{DAY}/{NAME[:-4]}.mp3"
    assert agent.store.rows() == [agent.store.by_stem(f"{DAY}/{NAME[:-4]}")]


def test_files_older_than_the_backfill_window_wait_for_backfill(
    site: Site, make_agent: Any
) -> None:
    old = site.spool_file(name(1))
    new = site.spool_file(name(2))
    write_recording(old)
    write_recording(new)
    age(old, 8 * 86400)  # default window: 7 days before the first start
    agent = make_agent(site.config())
    agent.run_until_idle()
    assert state_of(agent, name(1)) == ("skipped", "older than the backfill window")
    assert state_of(agent, name(2))[0] == "done"


def test_same_remote_name_gets_a_numbered_variant(site: Site, make_agent: Any, wide: Any) -> None:
    # A flat 2.x spool and a dated folder can hold the same base name.
    write_recording(site.spool_file(NAME), seed=1)
    write_recording(site.spool_file(f"{DAY}/{NAME}"), seed=2)
    make_agent(wide).run_until_idle()
    base = f"{DAY}/101502_out_1001_to_18005551234_1710497702.42"
    names = {shipped_as(site, NAME), shipped_as(site, f"{DAY}/{NAME}")}
    assert names == {f"{base}.wav", f"{base}-2.wav"}
    assert site.shipped() == sorted([f"{DAY}/manifest.json", *names])
    shas = {sha(site.remote(NAME)), sha(site.remote(f"{DAY}/{NAME}"))}
    assert shas == {sha(site.spool / NAME), sha(site.spool / DAY / NAME)}


def test_transient_failure_is_retried_with_backoff(site: Site, make_agent: Any, wide: Any) -> None:
    write_recording(site.spool_file(f"{DAY}/{NAME}"))
    agent = make_agent(wide, FlakyTransport(site.dest, [TransientError("connection reset")]))
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    row = agent.store.by_stem(f"{DAY}/{NAME}"[:-4])
    assert (row.state, row.reason, row.attempts) == ("failed", "connection reset", 1)
    assert now + 30 <= row.next_attempt_at <= now + 36  # backoff with jitter
    assert agent.run_once(now + 10) == row.next_attempt_at  # not yet due
    assert not (site.remote(f"{DAY}/{NAME}")).exists()
    agent.run_once(now + 37)
    assert state_of(agent, f"{DAY}/{NAME}")[0] == "done"


def test_a_servers_retry_after_is_waited_out(site: Site, make_agent: Any, wide: Any) -> None:
    """S3's 503 SlowDown with Retry-After: 2 h beats the 30 s backoff."""
    write_recording(site.spool_file(f"{DAY}/{NAME}"))
    slow_down = TransientError("HTTP 503 SlowDown", retry_after=7200)
    agent = make_agent(wide, FlakyTransport(site.dest, [slow_down]))
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    row = agent.store.by_stem(f"{DAY}/{NAME}"[:-4])
    assert row.state == "failed" and now + 7200 <= row.next_attempt_at <= now + 7201
    agent.run_once(now + 7201)
    assert state_of(agent, f"{DAY}/{NAME}")[0] == "done"


def test_destination_down_pauses_and_resumes_by_itself(
    site: Site, make_agent: Any, wide: Any
) -> None:
    write_recording(site.spool_file(f"{DAY}/{NAME}"))
    agent = make_agent(wide, FlakyTransport(site.dest, [DestinationDown("disk full")]))
    now = time.time()
    agent.start(now)
    resume_at = agent.run_once(now)
    assert agent.destination.paused_reason == "disk full"
    assert json.loads(agent.store.meta("destination")) == {"state": "paused", "reason": "disk full"}
    assert state_of(agent, f"{DAY}/{NAME}")[0] == RecordingState.PENDING  # handed back, queued
    assert resume_at is not None and resume_at > now
    agent.run_once(resume_at)
    assert agent.destination.paused_reason is None
    assert state_of(agent, f"{DAY}/{NAME}")[0] == "done"


def test_missing_destination_root_pauses_at_start(site: Site, make_agent: Any, wide: Any) -> None:
    write_recording(site.spool_file(f"{DAY}/{NAME}"))
    site.dest.rmdir()
    agent = make_agent(wide)
    agent.run_until_idle()
    assert "does not exist" in (agent.destination.paused_reason or "")
    assert state_of(agent, f"{DAY}/{NAME}")[0] == "pending"
    site.dest.mkdir()
    assert agent.destination.paused_until is not None
    agent.run_once(agent.destination.paused_until)
    assert state_of(agent, f"{DAY}/{NAME}")[0] == "done"


def test_crash_leftovers_are_cleaned_at_start(site: Site, make_agent: Any, wide: Any) -> None:
    write_recording(site.spool_file(f"{DAY}/{NAME}"))
    agent = make_agent(wide)
    now = time.time()
    agent.start(now)
    # Simulate a crash mid-upload: claimed row, a temporary at the destination, staging debris.
    (site.dest / DAY).mkdir(parents=True)
    temp = site.dest / DAY / ".recsync-0123456789abcdef.tmp"
    temp.write_bytes(b"partial")
    row = agent.store.by_stem(f"{DAY}/{NAME}"[:-4])
    agent.store.fix_remote_path(row.id, [f"{DAY}/{NAME}"], now)
    agent.store.claim(row.id, identity=row.identity, sha256="x", size=1, now=now)
    wide.state.staging.mkdir(parents=True, exist_ok=True)
    (wide.state.staging / "1.wav").write_bytes(b"debris")

    again = make_agent(wide)
    again.run_until_idle()
    assert not temp.exists()
    assert list(wide.state.staging.iterdir()) == []
    assert state_of(again, f"{DAY}/{NAME}")[0] == "done"
    assert site.shipped() == sorted([f"{DAY}/manifest.json", shipped_as(site, f"{DAY}/{NAME}")])
