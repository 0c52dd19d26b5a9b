"""Three PBXs into one SFTP root on the test sshd (destination.layout = "sites"): three
agents, three state databases, `run --once` in three processes at once. Every recording
lands once under its own site, each agent's files are its own and stay in its folder,
the root page lists all three (in Chromium), and a fourth agent on another host that
claims a taken site name is refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Site
from tests.support.browser import chromium_page, served
from tests.support.mixmonitor import write_recording
from tests.support.sshd import Sshd

DAY = "2024/03/15"
SITES = ("north", "south", "east")
PER_SITE = 6
DEADLINE = 120
REPO = Path(__file__).resolve().parent.parent


def pbx(tmp_path: Path, name: str, sshd: Sshd, root: Path, seed: int) -> Site:
    """A PBX's spool, state and config file; the same file names on every PBX (uniqueids
    are per PBX), different audio."""
    folder = tmp_path / name
    made = Site(folder, folder / "spool", folder / "dest", folder / "state", folder / "config.toml")
    for path in (made.spool, made.state):
        path.mkdir(parents=True)
    for n in range(PER_SITE):
        rel = f"{DAY}/out-18005551234-1001-20240315-1015{n:02d}-1710497702.{n}.wav"
        write_recording(made.spool_file(rel), seconds=1, seed=seed + n)
    made.write_config(
        agent={"site": name},
        spool={"backfill_days": 100_000},
        destination=sshd.destination(root, layout="sites"),
        index={"enabled": True},
    )
    return made


def command(made: Site, *args: str, host: str | None = None) -> list[str]:
    head = [sys.executable, "-m", "agent"]
    if host is not None:
        head = [sys.executable, "-m", "tests.support.otherhost", host]
    return [*head, "--config", str(made.config_path), "--log-level", "warning", *args]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def own_files(root: Path, name: str, spool: Path) -> None:
    """Everything under <root>/<name>/ is this agent's: its recordings (by content), and
    pages, manifests and a status.json that name it."""
    folder = root / name
    audio = sorted(sha(p) for p in folder.rglob("*.wav"))
    assert audio == sorted(sha(p) for p in spool.rglob("*.wav"))
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_dir() or path.suffix == ".wav":
            continue
        if rel == "status.json":
            assert json.loads(path.read_text())["site"] == name
        elif rel.endswith("manifest.json"):
            entries = json.loads(path.read_text())["recordings"]
            assert len(entries) == PER_SITE and {e["site"] for e in entries} == {name}
        else:
            pages = ("index.html", "search.html", f"{DAY}/index.html")
            assert rel in pages or rel.startswith(("static/", "search/")), rel


def test_three_pbxs_share_one_root_and_a_fourth_cannot_take_a_name(
    sshd: Sshd, sftp_root: Path, tmp_path: Path
) -> None:
    pbxs = [pbx(tmp_path, name, sshd, sftp_root, seed=100 * n) for n, name in enumerate(SITES)]
    running = [
        subprocess.Popen(
            command(made, "run", "--once"),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for made in pbxs
    ]
    for proc in running:
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err.decode()

    # Only the sites and the shared root page (with its static files) beside them.
    assert sorted(p.name for p in sftp_root.iterdir()) == sorted(
        [*SITES, "index.html", "search.html", "static"]
    )
    assert sorted(p.name for p in (sftp_root / "static").iterdir()) == [
        "favicon.svg",
        "player.js",
        "recsync.css",
        "recsync.js",
        "search.js",
    ]
    everything = [sha(p) for p in sftp_root.rglob("*.wav")]
    assert len(everything) == len(set(everything)) == PER_SITE * len(SITES)  # each once
    for name, made in zip(SITES, pbxs, strict=True):
        own_files(sftp_root, name, made.spool)
    assert list(sftp_root.rglob(".recsync-*")) == []

    with served(sftp_root) as url, chromium_page() as (page, problems):
        page.goto(url)
        assert sorted(page.locator("#sites .name a").all_inner_texts()) == sorted(SITES)
        assert page.locator("#sites tr.silent").count() == 0
        counts = page.locator("#per-day tbody td.count").all_inner_texts()
        assert counts == [str(PER_SITE)] * len(SITES)
        assert problems == []

    # A fourth PBX, on another host, configured with a name already taken.
    fourth = pbx(tmp_path, "intruder", sshd, sftp_root, seed=900)
    fourth.write_config(
        agent={"site": "south"},
        spool={"backfill_days": 100_000},
        destination=sshd.destination(sftp_root, layout="sites"),
        index={"enabled": True},
    )
    before = {p: sha(p) for p in sftp_root.rglob("*") if p.is_file()}
    refused = subprocess.run(
        command(fourth, "run", "--once", host="pbx-elsewhere"),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )
    assert refused.returncode != 0
    message = refused.stderr.decode()
    assert "the site 'south' at the destination already belongs to the agent on" in message
    assert "set another agent.site" in message
    assert {p: sha(p) for p in sftp_root.rglob("*") if p.is_file()} == before  # nothing written
