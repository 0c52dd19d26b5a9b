"""Several destinations: the [destination.NAME] tables, each destination's own state, the
fleet of agents, `since`, per-destination pages, names and codec, and the spool's
retention counting a recording delivered only once every destination has it."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.config import Config, from_dict, load
from agent.daemon import Agent
from agent.errors import ConfigError
from agent.fleet import Fleet
from agent.roles.elsewhere import Elsewhere
from agent.store.state import Row, Store
from agent.transport.local import LocalTransport
from tests.conftest import Site, _toml
from tests.support.mixmonitor import write_recording
from tests.support.sshd import Sshd

DAY = "2024/03/15"


def call(n: int, day: str = DAY) -> str:
    y, m, d = day.split("/")
    return f"{day}/out-18005551234-1001-{y}{m}{d}-1015{n:02d}-1710497702.{n}.wav"


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """TOML with sub-tables ([destination.NAME]) after their table's own keys."""
    lines: list[str] = []

    def table(name: str, values: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in values.items() if not isinstance(v, dict))
        for key, value in values.items():
            if isinstance(value, dict):
                table(f"{name}.{key}", value)

    for name, values in data.items():
        table(name, values)
    path.write_text("\n".join(lines) + "\n")
    return path


def two(site: Site, **archive: Any) -> dict[str, Any]:
    """The site's config plus [destination.archive], a local folder."""
    data: dict[str, Any] = site.data(spool={"backfill_days": 100_000})
    data["destination"]["archive"] = {"type": "local", "root": str(site.root / "archive")}
    data["destination"]["archive"].update(archive)
    (site.root / "archive").mkdir(exist_ok=True)
    return data


def config_of(site: Site, data: dict[str, Any]) -> Config:
    return from_dict(data, base=site.root)


def error_of(site: Site, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        config_of(site, data)
    return str(caught.value)


# --- the config ---------------------------------------------------------------------------


def test_destination_keys_are_default_and_tables_are_named_destinations(site: Site) -> None:
    config = config_of(site, two(site, pages=False))
    assert list(config.destinations) == ["default", "archive"]
    assert config.destination is config.destinations["default"]
    assert config.destination.root == site.dest
    archive = config.destinations["archive"]
    assert (archive.name, archive.root, archive.pages) == ("archive", site.root / "archive", False)
    # The default's state is where it always was; another's is a folder of its own.
    assert config.state_of("default") == config.state
    own = config.state_of("archive")
    assert own.path == site.state / "destinations" / "archive" / "state.db"
    assert own.staging == site.state / "destinations" / "archive" / "staging"


def test_a_config_of_named_tables_only_has_its_first_as_the_destination(site: Site) -> None:
    data = two(site)
    data["destination"] = {
        "web": {"type": "local", "root": str(site.dest)},
        "archive": data["destination"]["archive"],
    }
    config = config_of(site, data)
    assert list(config.destinations) == ["web", "archive"]
    assert config.destination.name == "web"
    assert config.for_destination("web").state.path == site.state / "destinations/web/state.db"


def test_one_destination_config_is_unchanged(site: Site) -> None:
    config = site.config()
    assert list(config.destinations) == ["default"]
    assert config.for_destination("default") == config


def test_per_destination_options_override_the_tables(site: Site) -> None:
    data = two(
        site,
        pages=True,
        naming_template="{date}_{uniqueid}",
        transcode_format="mp3",
        transcode_bitrate=32,
        since="2024-06-01",
    )
    data["retention"] = {"spool_days": 30}
    data["webhook"] = {"url": "http://127.0.0.1:9/hook"}
    config = config_of(site, data)
    archive = config.for_destination("archive")
    assert archive.index.enabled is True  # [index] enabled = false for the others
    assert archive.naming.template == "{date}_{uniqueid}"
    assert (archive.transcode.format, archive.transcode.bitrate) == ("mp3", 32)
    assert archive.destination.since == date(2024, 6, 1)
    # The spool's retention and the webhook are the first destination's alone.
    assert (archive.retention.spool_days, archive.webhook.url) == (0, None)
    first = config.for_destination("default")
    assert (first.retention.spool_days, first.webhook.url) == (30, "http://127.0.0.1:9/hook")
    assert (first.index.enabled, first.transcode.format) == (False, "none")


def test_since_reads_a_toml_date(site: Site) -> None:
    data = two(site)
    data["destination"] = data.pop("destination")  # last: [destination.archive] ends the file
    path = write_toml(site.config_path, data)
    path.write_text(path.read_text() + "since = 2024-06-01\n")  # in [destination.archive]
    assert load(path).destinations["archive"].since == date(2024, 6, 1)


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        ({"since": "June"}, "destination.archive.since: expected a date, YYYY-MM-DD"),
        ({"pages": "no"}, "destination.archive.pages: expected true or false"),
        ({"colour": "red"}, "unknown key destination.archive.colour"),
        ({"transcode_format": "ogg"}, "destination.archive.transcode_format: expected one of"),
        ({"naming_template": "{nope}"}, "destination.archive.naming_template:"),
        ({"type": "sftp", "root": "r"}, "destination.archive.host is required"),
    ],
)
def test_bad_destination_tables_name_their_key(
    site: Site, archive: dict[str, Any], message: str
) -> None:
    assert message in error_of(site, two(site, **archive))


def test_bad_destination_names_are_refused(site: Site) -> None:
    data = two(site)
    data["destination"]["Big Name"] = {"type": "local", "root": "x"}
    assert "destination.Big Name: a destination's name is 1 to 32 of a-z" in error_of(site, data)
    data = two(site)
    data["destination"]["x" * 33] = {"type": "local", "root": "x"}
    assert "a destination's name is 1 to 32" in error_of(site, data)


def test_a_table_named_like_a_key_is_refused(site: Site) -> None:
    data = two(site)
    data["destination"]["root"] = {"type": "local", "root": "x"}
    data["destination"]["type"] = "local"
    assert "destination.root: a key of [destination], not a table" in error_of(site, data)


def test_default_in_both_places_is_refused(site: Site) -> None:
    data = two(site)
    data["destination"]["default"] = {"type": "local", "root": "x"}
    assert "not in both" in error_of(site, data)


def test_two_destinations_in_one_place_are_refused(site: Site) -> None:
    data = two(site)
    data["destination"]["archive"]["root"] = str(site.dest)
    assert "the same place as destination.default" in error_of(site, data)


def test_a_key_of_another_type_names_its_line(site: Site) -> None:
    data = two(site)
    data["destination"]["archive"]["host"] = "web"
    path = write_toml(site.config_path, data)
    with pytest.raises(ConfigError) as caught:
        load(path)
    line = path.read_text().splitlines().index('host = "web"') + 1
    assert f":{line}: destination.archive.host does not apply" in str(caught.value)


# --- the fleet, in process ------------------------------------------------------------------


@pytest.fixture
def fleet_of(site: Site) -> Iterator[Callable[[Config], Fleet]]:
    made: list[Fleet] = []

    def build(config: Config) -> Fleet:
        agents = []
        for name in config.destinations:
            own = config.for_destination(name)
            agents.append(
                Agent(
                    config=own,
                    store=Store.open(own.state.path),
                    transport=LocalTransport(root=own.destination.root),
                    watch=False,
                )
            )
        names = list(config.destinations)[1:]
        others = {n: config.state_of(n).path for n in names}
        copies = {n: config.destinations[n] for n in names}  # read again, as _fleet does
        fleet = Fleet(agents, elsewhere=Elsewhere(others, destinations=copies))
        made.append(fleet)
        return fleet

    yield build
    for fleet in made:
        fleet.close()


def wavs(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*.wav")
        if not p.name.startswith(".")
    }


def record(site: Site, rels: list[str]) -> dict[str, str]:
    for n, rel in enumerate(rels):
        write_recording(site.spool_file(rel), seconds=1, seed=n)
    return {rel: hashlib.sha256((site.spool / rel).read_bytes()).hexdigest() for rel in rels}


def test_each_destination_gets_every_recording_with_its_own_pages(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    expected = record(site, [call(n) for n in range(3)])
    fleet = fleet_of(config_of(site, two(site, pages=True)))
    fleet.run(once=True)
    for root in (site.dest, site.root / "archive"):
        assert sorted(wavs(root).values()) == sorted(expected.values())
        manifest = json.loads((root / DAY / "manifest.json").read_text())
        assert sorted(e["original"] for e in manifest["recordings"]) == sorted(expected)
    assert (site.root / "archive" / "index.html").is_file()  # pages on for the archive only
    assert not (site.dest / "index.html").exists()
    default, archive = (
        Store.open_readonly(site.state / p) for p in ("state.db", "destinations/archive/state.db")
    )
    try:
        assert (
            {r.state for r in default.rows("1")} == {r.state for r in archive.rows("1")} == {"done"}
        )
    finally:
        default.close()
        archive.close()


def test_since_leaves_older_calls_to_backfill(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    old = record(site, [call(n) for n in range(2)])
    new = record(site, [call(n, "2024/07/01") for n in range(2, 4)])
    config = config_of(site, two(site, since="2024-06-01"))
    fleet = fleet_of(config)
    fleet.run(once=True)
    assert sorted(wavs(site.dest).values()) == sorted((old | new).values())
    assert sorted(wavs(site.root / "archive").values()) == sorted(new.values())
    archive = fleet.by_name()["archive"].store
    skipped = archive.rows("state = 'skipped'")
    assert sorted(r.path for r in skipped) == sorted(old)
    assert {r.reason for r in skipped} == {"started before destination.since"}
    fleet.close()

    path = write_toml(site.config_path, two(site, since="2024-06-01"))
    result = CliRunner().invoke(
        cli, ["--config", str(path), "backfill", "--destination", "archive"]
    )
    assert result.exit_code == 0, result.output
    assert "2 recording(s)" in result.output
    assert sorted(wavs(site.root / "archive").values()) == sorted((old | new).values())
    assert len(wavs(site.dest)) == 4  # the default had them all: nothing shipped twice


def test_an_original_leaves_the_spool_only_once_every_destination_has_it(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    expected = record(site, [call(n) for n in range(2)])
    data = two(site)
    data["retention"] = {"spool_days": 1}
    fleet = fleet_of(config_of(site, data))
    default, archive = fleet.agents
    now = time.time()
    default.run_until_idle()  # the archive's agent has not run yet
    report = default.apply_retention(now + 3 * 86400)
    assert report.retired == []
    assert report.kept["not yet at destination archive"] == 2
    assert all((site.spool / rel).exists() for rel in expected)

    archive.run_until_idle()
    report = default.apply_retention(now + 3 * 86400)
    assert sorted(r.path for r in report.retired) == sorted(expected)
    assert not any((site.spool / rel).exists() for rel in expected)
    assert len(wavs(site.root / "archive")) == len(wavs(site.dest)) == 2


def row_of(store: Store, rel: str) -> Row:
    (row,) = [r for r in store.rows("1") if r.path == rel]
    return row


def test_a_copy_gone_wrong_at_another_destination_keeps_the_original_and_ships_again(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    """The archive's state says done, but its copy was cut short: the spool's retention
    reads every destination's copy again, so the original stays and the archive ships it
    again; the next pass, with both copies whole, lets it go."""
    record(site, [call(n) for n in range(2)])
    data = two(site)
    data["retention"] = {"spool_days": 1}
    fleet = fleet_of(config_of(site, data))
    default, archive = fleet.agents
    default.run_until_idle()
    archive.run_until_idle()
    cut = call(0)
    remote = row_of(archive.store, cut).remote_path
    assert remote is not None
    whole = wavs(site.root / "archive")[remote]
    (site.root / "archive" / remote).write_bytes(b"RIFF")  # 4 bytes of a whole wav
    later = time.time() + 3 * 86400
    report = default.apply_retention(later)
    assert [r.path for r in report.retired] == [call(1)]
    assert (site.spool / cut).exists() and not (site.spool / call(1)).exists()
    ((rid, why),) = report.requeued
    assert rid == row_of(default.store, cut).id
    assert why.startswith(f"at destination archive: remote copy {remote} is 4 bytes"), why
    assert row_of(archive.store, cut).state == "pending"  # shipped again there
    assert row_of(default.store, cut).state == "done"

    archive.run_once(later)  # shipped again, to the same name, in that pass
    assert wavs(site.root / "archive")[remote] == whole
    report = default.apply_retention(later)
    assert [r.path for r in report.retired] == [cut] and not (site.spool / cut).exists()


def test_another_destination_that_cannot_answer_removes_nothing(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    """The archive's root gone (a lost mount): its copies cannot be read again, so no
    original leaves the spool; the first destination is not paused for it."""
    expected = record(site, [call(n) for n in range(2)])
    data = two(site)
    data["retention"] = {"spool_days": 1}
    fleet = fleet_of(config_of(site, data))
    default, archive = fleet.agents
    default.run_until_idle()
    archive.run_until_idle()
    (site.root / "archive").rename(site.root / "archive-unmounted")
    report = default.apply_retention(time.time() + 3 * 86400)
    assert report.retired == [] and report.requeued == []
    assert report.stopped is not None and report.stopped.startswith("destination archive: ")
    assert all((site.spool / rel).exists() for rel in expected)
    assert default.destination.paused_reason is None


def test_recsync_retention_reads_every_destinations_copy_again(site: Site) -> None:
    record(site, [call(n) for n in range(2)])
    data = two(site)
    config = write_toml(site.config_path, data)
    runner = CliRunner()
    shipped = runner.invoke(cli, ["--config", str(config), "run", "--once"])
    assert shipped.exit_code == 0, shipped.output
    data["retention"] = {"spool_days": 1e-9}  # "shipped more than 0.1 ms ago": both
    write_toml(site.config_path, data)
    archive_db = Store.open_readonly(site.state / "destinations" / "archive" / "state.db")
    try:
        remote = row_of(archive_db, call(0)).remote_path
    finally:
        archive_db.close()
    assert remote is not None
    (site.root / "archive" / remote).unlink()
    done = runner.invoke(cli, ["--config", str(config), "retention"])
    assert done.exit_code == 0, done.output
    assert f"at destination archive: remote copy {remote} is missing" in done.output
    assert (site.spool / call(0)).exists() and not (site.spool / call(1)).exists()
    listed = runner.invoke(
        cli, ["--config", str(config), "list", "--destination", "archive", "--json"]
    )
    states = {r["path"]: r["state"] for r in json.loads(listed.output)}
    assert states == {call(0): "pending", call(1): "done"}


def test_a_failing_destination_does_not_hold_the_other_up(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    """The archive's folder unwritable (a file where its root should be): the default ships
    everything in the same run; the archive keeps its recordings queued, not lost."""
    expected = record(site, [call(n) for n in range(3)])
    archive_root = site.root / "archive-file"
    archive_root.write_text("not a folder")
    fleet = fleet_of(config_of(site, two(site, root=str(archive_root))))
    fleet.run(once=True)
    assert sorted(wavs(site.dest).values()) == sorted(expected.values())
    archive = fleet.by_name()["archive"]
    assert archive.destination.paused_reason is not None
    assert {r.state for r in archive.store.rows("1")} <= {"pending", "failed"}


def test_status_list_and_show_name_each_destination(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    rels = list(record(site, [call(n) for n in range(2)]))
    data = two(site)
    fleet = fleet_of(config_of(site, data))
    fleet.agents[0].run_until_idle()  # the archive is behind
    fleet.agents[1].start(time.time())  # it has seen them, shipped nothing
    path = write_toml(site.config_path, data)
    runner = CliRunner()

    status = json.loads(runner.invoke(cli, ["--config", str(path), "status", "--json"]).output)
    assert status["backlog"] == 0  # the document of the first destination, as before
    each = status["destinations"]
    assert list(each) == ["default", "archive"]
    assert (each["default"]["backlog"], each["archive"]["backlog"]) == (0, 2)
    assert each["archive"]["counts"]["pending"] == 2
    text = runner.invoke(cli, ["--config", str(path), "status"]).output
    assert "destination archive" in text and "backlog 2" in text

    listed = json.loads(runner.invoke(cli, ["--config", str(path), "list", "--json"]).output)
    assert sorted((r["destination"], r["state"]) for r in listed) == [
        ("archive", "pending"),
        ("archive", "pending"),
        ("default", "done"),
        ("default", "done"),
    ]
    only = runner.invoke(cli, ["--config", str(path), "list", "--json", "--destination", "archive"])
    assert {r["destination"] for r in json.loads(only.output)} == {"archive"}
    bad = runner.invoke(cli, ["--config", str(path), "list", "--destination", "nope"])
    assert bad.exit_code == 1 and "no destination named 'nope'" in bad.output

    shown = json.loads(
        runner.invoke(cli, ["--config", str(path), "show", rels[0], "--json"]).output
    )
    assert shown["destinations"]["default"]["state"] == "done"
    assert shown["destinations"]["archive"]["state"] == "pending"
    assert shown["destinations"]["archive"]["remote_path"] is None


def test_forget_erases_at_every_destination(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    record(site, [call(n) for n in range(2)])
    data = two(site)
    fleet_of(config_of(site, data)).run(once=True)
    path = write_toml(site.config_path, data)
    result = CliRunner().invoke(
        cli, ["--config", str(path), "forget", "--number", "18005551234", "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert "4 recording(s) erased from every destination" in result.output
    assert wavs(site.dest) == wavs(site.root / "archive") == {}


# --- upgrade: a state db and destination of the one-destination release --------------------


def remote_files(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under root (but status.json, rewritten by each run): sha256, mtime, inode."""
    return {
        p.relative_to(root).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
            p.stat().st_ino,
        )
        for p in root.rglob("*")
        if p.is_file() and p.name != "status.json"
    }


def status_json(path: Path) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--config", str(path), "status", "--json"])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.output)
    document.pop("generated_at")
    document["retention"].pop("spool_free_percent")  # the machine's disk, not ours
    return document


def run_once(path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(path), "run", "--once"])
    assert result.exit_code == 0, result.output


def history(db: Path) -> tuple[list[str], int]:
    """The migrations applied, and how many transfers the events record."""
    store = Store.open_readonly(db)
    try:
        migrations = [r[0] for r in store.conn.execute("SELECT name FROM _sqlite_migrations")]
        (uploads,) = store.conn.execute(
            "SELECT count(*) FROM events WHERE event = 'uploading'"
        ).fetchone()
    finally:
        store.close()
    return migrations, int(uploads)


def test_upgrade_ships_nothing_again_and_status_is_unchanged(site: Site) -> None:
    """A state db and destination as the one-destination release leaves them (its config
    format, its state.path), then the same config again, then an archive added with
    `since`: nothing is shipped twice, nothing old goes to the archive."""
    old = record(site, [call(n) for n in range(3)])
    data: dict[str, Any] = site.data(spool={"backfill_days": 100_000})
    path = write_toml(site.config_path, data)
    run_once(path)
    shipped, before = remote_files(site.dest), status_json(path)
    migrations, uploads = history(site.state / "state.db")
    assert before["counts"]["done"] == 3 and "destinations" not in before

    run_once(path)  # the same config, the new release
    assert remote_files(site.dest) == shipped
    assert status_json(path) == before
    assert history(site.state / "state.db") == (migrations, uploads)

    data["destination"]["archive"] = {
        "type": "local",
        "root": str(site.root / "archive"),
        "since": "2024-06-01",
    }
    (site.root / "archive").mkdir()
    path = write_toml(site.config_path, data)
    run_once(path)
    assert remote_files(site.dest) == shipped
    assert wavs(site.root / "archive") == {}  # the years before `since` stay where they are
    after = status_json(path)
    each = after.pop("destinations")
    assert after == before
    assert each["archive"]["counts"]["skipped"] == len(old)
    assert (each["archive"]["backlog"], each["default"]["backlog"]) == (0, 0)

    new = record(site, [call(n, "2024/07/01") for n in range(3, 5)])
    run_once(path)
    assert sorted(wavs(site.root / "archive").values()) == sorted(new.values())
    assert sorted(wavs(site.dest).values()) == sorted((old | new).values())
    assert history(site.state / "state.db") == (migrations, uploads + 2)


def test_a_hold_covers_the_call_at_every_destination(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    record(site, [call(n) for n in range(2)])
    data = two(site)
    fleet_of(config_of(site, data)).run(once=True)
    path = write_toml(site.config_path, data)
    runner = CliRunner()
    held = runner.invoke(cli, ["--config", str(path), "hold", "add", "--uniqueid", "1710497702.0"])
    assert held.exit_code == 0, held.output
    result = runner.invoke(
        cli, ["--config", str(path), "forget", "--number", "18005551234", "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert "2 recording(s) erased from every destination" in result.output
    for root in (site.dest, site.root / "archive"):
        assert [p.name for p in root.rglob("*.wav")] == [
            "101500_out_1001_to_18005551234_1710497702.0.wav"
        ]
    lifted = runner.invoke(
        cli, ["--config", str(path), "hold", "remove", "--uniqueid", "1710497702.0"]
    )
    assert lifted.exit_code == 0, lifted.output
    archive = Store.open_readonly(site.state / "destinations" / "archive" / "state.db")
    try:
        assert archive.holds.all() == []
    finally:
        archive.close()


def test_with_named_tables_only_a_hold_reaches_the_first_destinations_state(
    site: Site, fleet_of: Callable[[Config], Fleet]
) -> None:
    record(site, [call(n) for n in range(2)])
    data = two(site)
    data["destination"] = {
        "web": dict(site.data()["destination"]),
        **{"archive": data["destination"]["archive"]},
    }
    config = config_of(site, data)
    assert list(config.destinations) == ["web", "archive"]
    fleet_of(config).run(once=True)
    path = write_toml(site.config_path, data)
    runner = CliRunner()
    held = runner.invoke(cli, ["--config", str(path), "hold", "add", "--uniqueid", "1710497702.0"])
    assert held.exit_code == 0, held.output
    for name in ("web", "archive"):
        store = Store.open_readonly(site.state / "destinations" / name / "state.db")
        try:
            assert [h.value for h in store.holds.all()] == ["1710497702.0"], name
        finally:
            store.close()
    listed = runner.invoke(cli, ["--config", str(path), "hold", "list"])
    assert "1710497702.0" in listed.output
    assert not (site.state / "state.db").exists()  # no database that no agent reads


def test_metrics_name_each_destination(site: Site) -> None:
    from prometheus_client import generate_latest

    from agent.metrics import Metrics

    record(site, [call(n) for n in range(2)])
    config = config_of(site, two(site))
    metrics = Metrics("default")
    agents = []
    for name in config.destinations:
        own = config.for_destination(name)
        agents.append(
            Agent(
                config=own,
                store=Store.open(own.state.path),
                transport=LocalTransport(root=own.destination.root),
                metrics=metrics if name == "default" else metrics.for_destination(name),
                watch=False,
            )
        )
    fleet = Fleet(agents)
    try:
        agents[0].run_until_idle()  # the archive is behind: its backlog shows
        agents[1].start(time.time())
        for agent in agents:
            agent.health.check(time.time())
        text = generate_latest(metrics.registry).decode()
    finally:
        fleet.close()
    assert 'recsync_destination_shipped_total{destination="default"} 2.0' in text
    assert 'recsync_destination_backlog{destination="default"} 0.0' in text
    assert 'recsync_destination_backlog{destination="archive"} 2.0' in text
    assert 'recsync_destination_paused_by_name{destination="archive"} 0.0' in text
    assert "recsync_backlog 0.0" in text  # the unlabelled series stay the first's


def test_check_config_names_every_destination(site: Site) -> None:
    path = write_toml(site.config_path, two(site))
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config"])
    assert result.exit_code == 0, result.output
    assert f"destinations default: local {site.dest}, archive: local {site.root}/archive" in (
        result.output.replace("\n", "")
    )


def test_an_sftp_copy_altered_at_another_destination_keeps_the_original(
    site: Site, sshd: Sshd, sftp_root: Path
) -> None:
    """The same re-check over a real OpenSSH: a copy of the right size whose bytes changed
    (its sha256 read there) is no reason to delete; the archive ships it again."""
    record(site, [call(n) for n in range(2)])
    data: dict[str, Any] = site.data(spool={"backfill_days": 100_000})
    data["destination"]["archive"] = sshd.destination(sftp_root)
    config = write_toml(site.config_path, data)
    runner = CliRunner()
    shipped = runner.invoke(cli, ["--config", str(config), "run", "--once"])
    assert shipped.exit_code == 0, shipped.output
    archive_db = Store.open_readonly(site.state / "destinations" / "archive" / "state.db")
    try:
        remote = row_of(archive_db, call(0)).remote_path
    finally:
        archive_db.close()
    assert remote is not None
    copy = sftp_root / remote
    whole = copy.read_bytes()
    copy.write_bytes(whole[:-4] + b"\0\0\0\1")  # same size, other bytes
    data["retention"] = {"spool_days": 1e-9}
    write_toml(site.config_path, data)

    done = runner.invoke(cli, ["--config", str(config), "retention"])
    assert done.exit_code == 0, done.output
    assert f"at destination archive: remote copy {remote} has another sha256" in done.output
    assert (site.spool / call(0)).exists() and not (site.spool / call(1)).exists()
    again = runner.invoke(cli, ["--config", str(config), "run", "--once"])
    assert again.exit_code == 0, again.output
    assert copy.read_bytes() == whole
