"""`recsync index rebuild`: every page and manifest written again from the state database,
and nothing uploaded again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.lock import exclusive
from tests.conftest import Site
from tests.support.cdr import SqliteCdrFile
from tests.test_state_rebuild import call_name, manifests, record, recsync, remote_files


def without_times(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    data.pop("generated_at")
    return data


def test_lost_and_garbled_pages_come_back_from_the_state_database(site: Site) -> None:
    cdr = SqliteCdrFile(site.root / "master.db")
    site.write_config(
        spool={"backfill_days": 100_000},
        cdr={"type": "sqlite", "path": str(cdr.path), "wait_seconds": 0.2},
        index={"enabled": True},
    )
    record(site, cdr, range(6))
    assert recsync(site, "run", "--once").returncode == 0
    root = site.dest
    days = sorted(p.parent for p in root.rglob("manifest.json"))
    assert len(days) == 2
    shipped, entries = remote_files(root), manifests(root)
    day_manifests = {d: without_times(d / "manifest.json") for d in days}
    css = (root / "static/recsync.css").read_bytes()

    (days[0] / "manifest.json").unlink()
    (days[1] / "index.html").write_text("garbled")
    (root / "index.html").unlink()
    (root / "static/recsync.css").write_text("garbled")

    rebuilt = recsync(site, "index", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rewrote the pages and manifests of 2 day(s)" in rebuilt.stdout

    assert manifests(root) == entries  # field for field
    assert {d: without_times(d / "manifest.json") for d in days} == day_manifests
    for n in range(6):
        uid = call_name(n)[2]
        day = (
            days[0] if call_name(n)[0].startswith(days[0].relative_to(root).as_posix()) else days[1]
        )
        assert uid in (day / "index.html").read_text()
    assert "garbled" not in (days[1] / "index.html").read_text()
    assert (root / "index.html").exists()
    assert (root / "static/recsync.css").read_bytes() == css
    assert remote_files(root) == shipped  # same inodes and mtimes: nothing uploaded again
    assert json.loads((root / "status.json").read_text())["counts"]["done"] == 6


def test_it_refuses_while_the_agent_runs(site: Site) -> None:
    site.write_config()
    assert recsync(site, "run", "--once").returncode == 0
    with exclusive(site.state / "state.db"):
        refused = recsync(site, "index", "rebuild")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert "another recsync process is running on" in refused.stderr
