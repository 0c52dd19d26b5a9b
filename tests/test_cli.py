"""`recsync` as an admin types it: exit codes, one-line errors, what --json promises."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agent import __version__
from agent import config as config_module
from agent.cli import cli
from tests.conftest import Site
from tests.support.contracts import STATUS_FIELDS
from tests.support.mixmonitor import write_recording

DAY = "2024/03/15"
OUT = f"{DAY}/out-2125551234-100-20240315-101502-1710497702.42.wav"
IN = f"{DAY}/in-100-2125551234-20240315-111502-1710501302.43.wav"
BAD_NAME = f"{DAY}/not-a-recording.wav"
EMPTY = f"{DAY}/internal-200-100-20240315-121502-1710504902.44.wav"
# The first start ships (and scans) this far back: just past the recordings' day folder.
SPOOL = {"backfill_days": (date.today() - date(2024, 3, 15)).days + 2}

PARSED_FIELDS = {"kind", "dst", "src", "started_at", "uniqueid", "extension", "era", "pattern"}


@pytest.fixture(autouse=True)
def agent_logging() -> Iterator[None]:
    """The CLI points the agent's logger at the runner's stderr; put it back afterwards."""
    logger = logging.getLogger("agent")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@dataclass
class Recsync:
    """`recsync --config <site's file> ...`, run in-process."""

    config_path: Path

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.config_path), *args])

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def recsync(site: Site) -> Recsync:
    return Recsync(site.write_config(spool=SPOOL))


@pytest.fixture
def ran(site: Site, make_agent: Callable[..., Any], recsync: Recsync) -> Recsync:
    """Two shippable recordings, an unparseable name and one without audio, after a run."""
    for rel, seconds in ((OUT, 2.0), (IN, 1.0), (BAD_NAME, 1.0), (EMPTY, 0.0)):
        write_recording(site.spool_file(rel), seconds=seconds)
    make_agent(site.config(spool=SPOOL)).run_until_idle()
    return recsync


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    return line


def state_of(site: Site, rel: str) -> str:
    db = sqlite3.connect(site.state / "state.db")
    try:
        (state,) = db.execute("SELECT state FROM recordings WHERE path = ?", (rel,)).fetchone()
    finally:
        db.close()
    return str(state)


# --- without state --------------------------------------------------------------------


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"recsync, version {__version__}"


def test_parse_without_a_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / "etc" / "config.toml"  # stands in for /etc/recsync/config.toml
    monkeypatch.setattr(config_module, "DEFAULT_PATH", absent)
    name = OUT.rsplit("/", 1)[1]
    result = CliRunner().invoke(cli, ["--config", str(absent), "parse", name, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= PARSED_FIELDS
    started = datetime.fromisoformat(data.pop("started_at"))
    assert started.strftime("%Y-%m-%d %H:%M:%S") == "2024-03-15 10:15:02"
    assert started.utcoffset() is not None
    assert {k: data[k] for k in PARSED_FIELDS - {"started_at"}} == {
        "kind": "out",
        "dst": "2125551234",
        "src": "100",
        "uniqueid": "1710497702.42",
        "extension": "100",
        "era": "modern",
        "pattern": "modern",
    }


def test_parse_uses_the_configs_patterns(site: Site) -> None:
    regex = r"^rec-(?P<src>\d+)-(?P<epoch>\d+)$"
    config = site.config_path
    config.write_text(
        f"[spool]\npatterns = [{{ name = \"mine\", regex = '{regex}' }}]\n"
        f'[destination]\nroot = "{site.dest}"\n'
    )
    result = Recsync(config)("parse", "rec-100-1710497702.wav", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["pattern"], data["kind"], data["era"], data["src"]) == (
        "mine",
        "custom",
        "custom",
        "100",
    )
    assert datetime.fromisoformat(data["started_at"]).timestamp() == 1710497702


def test_parse_human_output(recsync: Recsync) -> None:
    result = recsync("parse", f"/some/where/{OUT.rsplit('/', 1)[1]}")
    assert result.exit_code == 0
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line.strip())
    assert (lines["kind"], lines["uniqueid"]) == ("out", "1710497702.42")


def test_parse_with_a_missing_config_named_on_the_command_line(tmp_path: Path) -> None:
    typo = tmp_path / "cofnig.toml"
    result = Recsync(typo)("parse", OUT.rsplit("/", 1)[1])
    assert str(typo) in one_line_error(result)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("out-2125551234-100-20240315-101502-1710497702.42.txt", "unsupported extension"),
        ("out-2125551234-100-20241315-101502-1710497702.42.wav", "impossible date"),
        ("out-2125551234-100-20240315-101502.wav", "no uniqueid"),
        ("out-2125551234-100-20240315-101502-1710497702.42-in.wav", "leg file"),
        ("hello.wav", "does not match"),
    ],
)
def test_parse_refuses_a_bad_name(recsync: Recsync, name: str, reason: str) -> None:
    assert reason in one_line_error(recsync("parse", name, "--json"))


@pytest.mark.parametrize(
    "args", [["status"], ["status", "--json"], ["list"], ["show", "1"]], ids=" ".join
)
def test_reading_before_the_agent_ran(site: Site, recsync: Recsync, args: list[str]) -> None:
    assert "no state database" in one_line_error(recsync(*args))
    assert not (site.state / "state.db").exists()


def test_retry_before_the_agent_ran(site: Site, recsync: Recsync) -> None:
    assert "no state database" in one_line_error(recsync("retry", "--quarantined"))
    assert not (site.state / "state.db").exists()


# --- after a run ----------------------------------------------------------------------


def test_status_json(site: Site, ran: Recsync) -> None:
    data = ran.json("status")
    assert set(data) == STATUS_FIELDS
    assert (data["version"], data["host"]) == (__version__, socket.gethostname())
    assert data["counts"] == {
        "pending": 0,
        "waiting_cdr": 0,
        "uploading": 0,
        "done": 2,
        "failed": 0,
        "quarantined": 1,
        "skipped": 1,
        "expired": 0,
    }
    assert (data["backlog"], data["oldest_pending_seconds"]) == (0, None)
    assert data["destination"]["state"] == "ok"
    assert data["cdr"] == {"type": "none", "state": "disabled", "reason": None}
    assert data["last_error"]["path"] == BAD_NAME
    assert data["last_error"]["state"] == "quarantined"
    uploaded = datetime.fromisoformat(data["last_upload_at"])
    generated = datetime.fromisoformat(data["generated_at"])
    assert uploaded.utcoffset() is not None
    assert 0 <= (generated - uploaded).total_seconds() < 600
    shipped = {site.remote(OUT), site.remote(IN), site.dest / DAY / "manifest.json"}
    assert {p.relative_to(site.dest).as_posix() for p in shipped} <= set(site.shipped())


def test_status_counts_the_backlog(site: Site, ran: Recsync) -> None:
    assert ran("retry", "--quarantined").exit_code == 0
    data = ran.json("status")
    assert (data["counts"]["pending"], data["counts"]["quarantined"], data["backlog"]) == (1, 0, 1)
    assert data["oldest_pending_seconds"] >= 0


def test_status_human(site: Site, ran: Recsync) -> None:
    result = ran("status")
    assert result.exit_code == 0, result.output
    assert "destination" in result.stdout
    assert "ok" in result.stdout
    assert "not-a-recording.wav" in result.stdout  # the last error


@pytest.mark.parametrize(
    ("state", "paths"),
    [("done", {OUT, IN}), ("quarantined", {BAD_NAME}), ("skipped", {EMPTY}), ("failed", set())],
)
def test_list_by_state(ran: Recsync, state: str, paths: set[str]) -> None:
    rows = ran.json("list", "--state", state)
    assert {r["path"] for r in rows} == paths
    assert {r["state"] for r in rows} <= {state}


def test_list_everything_newest_first(ran: Recsync) -> None:
    rows = ran.json("list")
    assert len(rows) == 4
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert len(ran.json("list", "--limit", "1")) == 1
    assert ran.json("list", "--since", "2999-01-01") == []


def test_list_refuses_an_unknown_state(ran: Recsync) -> None:
    assert ran("list", "--state", "lost").exit_code == 2


def done_row(ran: Recsync, path: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = ran.json("list", "--state", "done")
    (found,) = [r for r in rows if r["path"] == path]
    return found


@pytest.mark.parametrize("by", ["id", "uniqueid", "spool path", "remote path"])
def test_show_finds_a_recording(ran: Recsync, by: str) -> None:
    row = done_row(ran, OUT)
    ref = {
        "id": str(row["id"]),
        "uniqueid": "1710497702.42",
        "spool path": OUT,
        "remote path": row["remote_path"],
    }[by]
    result = ran("show", ref)
    assert result.exit_code == 0, result.output
    assert OUT in result.stdout
    history = result.stdout.split("history:\n", 1)[1]
    assert [line.split()[1] for line in history.splitlines()] == [
        "pending",
        "named",
        "uploading",
        "done",
    ]
    data = ran.json("show", ref)
    assert (data["id"], data["state"]) == (row["id"], "done")
    assert [e["event"] for e in data["events"]] == [
        "pending",
        "named",
        "uploading",
        "done",
    ]


def test_show_finds_a_recording_by_its_full_spool_path(site: Site, ran: Recsync) -> None:
    # What an admin copies from `ls /var/spool/asterisk/monitor/...` (DESIGN: show PATH).
    result = ran("show", str(site.spool / OUT))
    assert result.exit_code == 0, result.output
    assert OUT in result.stdout


@pytest.mark.parametrize("ref", ["999", "0000.00", "2024/03/15/nothing.wav"])
def test_show_of_an_unknown_ref(ran: Recsync, ref: str) -> None:
    assert ref in one_line_error(ran("show", ref))


def test_retry_quarantined(site: Site, ran: Recsync) -> None:
    result = ran("retry", "--quarantined")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "1 recording(s) queued again"
    assert state_of(site, BAD_NAME) == "pending"
    assert state_of(site, OUT) == "done"
    assert ran("retry", "--quarantined").stdout.strip() == "0 recording(s) queued again"


def test_retry_by_id_leaves_done_rows(site: Site, ran: Recsync) -> None:
    quarantined = ran.json("list", "--state", "quarantined")[0]["id"]
    done = done_row(ran, OUT)["id"]
    result = ran("retry", str(quarantined), str(done))
    assert result.stdout.strip() == "1 recording(s) queued again"
    assert (state_of(site, BAD_NAME), state_of(site, OUT)) == ("pending", "done")


def test_retry_without_arguments_is_a_usage_error(site: Site, ran: Recsync) -> None:
    result = ran("retry")
    assert result.exit_code == 2
    assert "--quarantined" in result.stderr
    assert state_of(site, BAD_NAME) == "quarantined"
