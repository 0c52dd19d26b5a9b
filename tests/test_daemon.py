"""`recsync run` as a real process: real inotify, real signals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from tests.conftest import Site
from tests.support.daemon import Daemon, wait_for
from tests.support.mixmonitor import BURST, MixMonitorWriter, audio, write_recording


def name_for(at: datetime, n: int) -> str:
    return f"in-600-2125550100-{at:%Y%m%d-%H%M%S}-{int(at.timestamp())}.{n}.wav"


@pytest.fixture
def daemon(site: Site) -> Iterator[Daemon]:
    today = datetime.now().strftime("%Y/%m/%d")
    (site.spool / today).mkdir(parents=True)
    config = site.write_config(spool={"reconcile_minutes": 600})  # only inotify can help
    d = Daemon(config, site.root / "agent.log")
    yield d
    d.kill()


@pytest.mark.slow
def test_closed_recording_ships_on_the_close_event(site: Site, daemon: Daemon) -> None:
    at = datetime.now().replace(microsecond=0)
    rel = f"{at:%Y/%m/%d}/{name_for(at, 1)}"
    with MixMonitorWriter(site.spool / rel) as writer:
        writer.write(audio(BURST * 3, seed=1))
    wait_for(lambda: site.remote(rel).exists(), "the closed recording to ship")
    assert site.remote(rel).read_bytes() == (site.spool / rel).read_bytes()


@pytest.mark.slow
def test_recording_moved_into_the_spool_ships(site: Site, daemon: Daemon) -> None:
    at = datetime.now().replace(microsecond=0)
    rel = f"{at:%Y/%m/%d}/{name_for(at, 2)}"
    outside = site.root / "cache" / name_for(at, 2)  # cache_record_files=yes records elsewhere
    outside.parent.mkdir()
    data = write_recording(outside, seconds=1, seed=2)
    os.rename(outside, site.spool / rel)
    wait_for(lambda: site.remote(rel).exists(), "the moved-in recording to ship")
    assert site.remote(rel).read_bytes() == data


@pytest.mark.slow
def test_recording_in_a_new_date_folder_ships(site: Site, daemon: Daemon) -> None:
    at = (datetime.now() + timedelta(days=1)).replace(microsecond=0)  # midnight's new folder
    rel = f"{at:%Y/%m/%d}/{name_for(at, 3)}"
    (site.spool / rel).parent.mkdir(parents=True, exist_ok=True)
    data = write_recording(site.spool / rel, seconds=1, seed=3)
    wait_for(lambda: site.remote(rel).exists(), "the recording in the new folder to ship")
    assert site.remote(rel).read_bytes() == data
    # And the new folder is watched from now on.
    later = f"{at:%Y/%m/%d}/{name_for(at, 4)}"
    write_recording(site.spool / later, seconds=1, seed=4)
    wait_for(lambda: site.remote(later).exists(), "a second recording in the new folder")


@pytest.mark.slow
def test_sigterm_stops_promptly_with_status_zero(site: Site, daemon: Daemon) -> None:
    assert daemon.stop() == 0
    assert "event=stopped" in daemon.text()
