"""`recsync backfill`: what the first start left out ships on demand, with progress."""

from __future__ import annotations

import os
import time

from click.testing import CliRunner

from agent.cli import cli
from agent.spool.wavheader import wav_header
from tests.conftest import Site

COUNT = 10_000
AUDIO = bytes(800)  # 50 ms of silence: the test is about counts, not sizes


def old_spool(site: Site) -> None:
    """COUNT finished recordings from a month ago, over four old day folders."""
    month_ago = time.time() - 30 * 86400
    for n in range(COUNT):
        day = 1 + n % 4
        stamp = f"202402{day:02d}-1{n // 3600 % 10}{n // 60 % 60:02d}{n % 60:02d}"
        path = site.spool_file(f"2024/02/{day:02d}/in-600-{n:07d}-{stamp}-1706745600.{n}.wav")
        path.write_bytes(wav_header("wav", len(AUDIO)) + AUDIO)
        os.utime(path, (month_ago, month_ago))


def test_backfill_ships_what_the_first_start_left_out_once(site: Site) -> None:
    old_spool(site)
    config = site.write_config(spool={"backfill_rate": 0})
    runner = CliRunner()
    first = runner.invoke(cli, ["--config", str(config), "run", "--once"])
    assert first.exit_code == 0, first.output
    assert site.shipped() == []  # older than the 7-day window: left for backfill

    dry = runner.invoke(cli, ["--config", str(config), "backfill", "--dry-run"])
    assert dry.exit_code == 0 and f"{COUNT} recording(s)" in dry.output
    assert site.shipped() == []

    result = runner.invoke(cli, ["--config", str(config), "backfill"])
    assert result.exit_code == 0, result.output
    assert f"{COUNT} recording(s)" in result.output and "queued" in result.output
    assert f"{COUNT}/{COUNT}" in result.stderr  # the progress bar reached the end
    shipped = [f for f in site.shipped() if f.endswith(".wav")]
    assert len(shipped) == COUNT

    again = runner.invoke(cli, ["--config", str(config), "backfill"])
    assert again.exit_code == 0 and "0 recording(s)" in again.output
    assert len([f for f in site.shipped() if f.endswith(".wav")]) == COUNT


def test_backfill_since_takes_only_the_newer_files(site: Site) -> None:
    for n, days_ago in enumerate((40, 20)):
        path = site.spool_file(f"2024/02/0{n + 1}/in-600-{n}-2024020{n + 1}-101500-1706.{n}.wav")
        path.write_bytes(wav_header("wav", len(AUDIO)) + AUDIO)
        stamp = time.time() - days_ago * 86400
        os.utime(path, (stamp, stamp))
    config = site.write_config(spool={"backfill_rate": 0})
    since = time.strftime("%Y-%m-%d", time.localtime(time.time() - 30 * 86400))
    result = CliRunner().invoke(cli, ["--config", str(config), "backfill", "--since", since])
    assert result.exit_code == 0, result.output
    assert "1 recording(s)" in result.output
    assert len([f for f in site.shipped() if f.endswith(".wav")]) == 1
