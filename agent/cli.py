"""The `recsync` command: parse options, call the core, print. Nothing is computed here."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent import __version__, spoolnames
from agent import config as config_module
from agent import log as log_module
from agent import status as status_module
from agent.errors import AgentError
from agent.lock import AlreadyRunning, exclusive
from agent.model import RecordingState
from agent.secrets import give_to_folder_owner
from agent.store.state import REBUILD, Store

if TYPE_CHECKING:
    from agent.cdr import CdrSource
    from agent.cdr.shared import SharedCdr
    from agent.daemon import Agent
    from agent.fleet import Fleet
    from agent.media.once import PreparedOnce
    from agent.metrics import Metrics
    from agent.roles.elsewhere import Elsewhere
    from agent.roles.health import NoMetrics
    from agent.spool.shared import Feed
    from agent.systemd import Notifier

STATES = [s.value for s in RecordingState]


class _Group(click.Group):
    """Turns the agent's own errors into one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AgentError as exc:
            raise click.ClickException(str(exc)) from None
        except sqlite3.OperationalError as exc:  # disk full, locked for too long
            raise click.ClickException(f"the state database failed: {exc}") from None
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # a constraint ...: a bug
                raise
            # Damage found past the open (which skips the full check for speed).
            raise click.ClickException(f"the state database is damaged: {exc}{REBUILD}") from None


class Context:
    def __init__(self, config_path: Path, log_level: str | None) -> None:
        self.config_path = config_path
        self.log_level = log_level
        self._config: config_module.Config | None = None

    @property
    def config(self) -> config_module.Config:
        if self._config is None:
            self._config = config_module.load(self.config_path)
            log_module.setup(self.log_level or self._config.log.level)
        return self._config

    @property
    def first_state(self) -> Path:
        """The first destination's state database: state.path for [destination] keys,
        `destinations/NAME/state.db` where the file has [destination.NAME] tables only."""
        return self.config.state_of(self.config.destination.name).path

    def reader(self) -> Store:
        """The first destination's state database, read-only (a CLI run as root leaves
        no root-owned files), closed when the command ends."""
        store = Store.open_readonly(self.first_state)
        click.get_current_context().call_on_close(store.close)
        return store

    def writer(self) -> Store:
        """The state database for the commands that change it, closed when they end."""
        store = Store.open(self.first_state, create=False)
        click.get_current_context().call_on_close(store.close)
        return store

    def destinations(self, only: str | None) -> list[str]:
        """The destinations a command is about: `only` (checked), or every one."""
        names = list(self.config.destinations)
        if only is None:
            return names
        if only not in names:
            raise AgentError(f"no destination named {only!r} (configured: {', '.join(names)})")
        return [only]

    def one(self, only: str | None) -> config_module.Config:
        """The config (Config.for_destination) of the one destination a command acts on:
        `only` (checked), or the first."""
        return self.config.for_destination(self.destinations(only)[0])

    def readers(self, only: str | None = None) -> dict[str, Store]:
        """Destination name -> its state database, read-only; one not created yet (a
        destination added since the agent last ran) is left out, unless it is the first."""
        found = {}
        for name in self.destinations(only):
            path = self.config.state_of(name).path
            if name == self.config.destination.name or only is not None or path.exists():
                store = Store.open_readonly(path)
                click.get_current_context().call_on_close(store.close)
                found[name] = store
        return found


pass_context = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
destination_option = click.option(
    "--destination",
    "only",
    metavar="NAME",
    help="Only this destination ([destination.NAME]; the [destination] keys are 'default').",
)
one_destination_option = click.option(
    "--destination",
    "only",
    metavar="NAME",
    help="This destination ([destination.NAME]; the [destination] keys are 'default');"
    " default: the first.",
)


def _type_key(name: str) -> str:
    """The config key of a destination's type, as an admin finds it in the file."""
    return (
        "destination.type"
        if name == config_module.DEFAULT_DESTINATION
        else f"destination.{name}.type"
    )


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _expiry(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    """`--expires` in seconds, from `90s`, `30m`, `1h`, `2d` or a plain number."""
    found = re.fullmatch(r"(\d+)([smhd]?)", value.strip().lower())
    if found is None:
        raise click.BadParameter(f"{value!r} is not a duration: say 90s, 30m, 1h, 2d or seconds")
    seconds = int(found[1]) * _UNITS[found[2]]
    if not 1 <= seconds <= config_module.PRESIGN_MAX:
        most = config_module.PRESIGN_MAX
        raise click.BadParameter(f"{value!r} is {seconds} s: it must be 1 s to 7d ({most} s)")
    return seconds


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=config_module.DEFAULT_PATH,
    show_default=True,
    envvar="RECSYNC_CONFIG",
    help="The configuration file.",
)
@click.option(
    "--log-level", type=click.Choice(config_module.LOG_LEVELS), help="Overrides log.level."
)
@click.version_option(__version__, prog_name="recsync")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, log_level: str | None) -> None:
    """recsync ships finished FreePBX call recordings to a webserver, once, crash-safe."""
    ctx.obj = Context(config_path, log_level)


@cli.command()
@click.option("--once", is_flag=True, help="Ship what is due now, then exit.")
@pass_context
def run(ctx: Context, once: bool) -> None:
    """Run the agent in the foreground (systemd runs it like this)."""
    config = ctx.config
    with exclusive(config.state.path):
        _run(config, once)


def _agent(
    config: config_module.Config,
    store: Store,
    *,
    watch: bool,
    notifier: Notifier | None = None,
    metrics: Metrics | NoMetrics | None = None,
    spool_feed: Callable[[Callable[[], None]], Feed] | None = None,
    shared: Shared | None = None,
) -> Agent:
    """One destination's agent: `config` is its own (Config.for_destination); `shared`,
    what it shares with the other destinations' agents (else it opens its own CDR)."""
    from agent.cdr import open_source
    from agent.daemon import Agent
    from agent.publish.webhook import open_webhook
    from agent.store.uploads import UploadLedger
    from agent.transport import open_transport

    uploads = UploadLedger(config.state.path) if config.destination.type == "s3" else None
    return Agent(
        config=config,
        store=store,
        transport=open_transport(config.destination, uploads=uploads),
        cdr=open_source(config.cdr, state_folder=config.state.path.parent)
        if shared is None
        else shared.cdr(),
        webhook=open_webhook(config.webhook),
        notifier=notifier,
        metrics=metrics,
        watch=watch,
        spool_feed=spool_feed,
        copies=None if shared is None else shared.copies,
    )


def _fleet(
    config: config_module.Config,
    *,
    watch: bool,
    notifier: Notifier | None = None,
    metrics: Metrics | None = None,
    only: list[str] | None = None,
) -> Fleet:
    """An agent per destination (`only`: these), each over its own state database; the
    first one's retention asks the others' databases before an original leaves the spool."""
    from agent.fleet import Fleet
    from agent.roles.elsewhere import Elsewhere

    names = list(config.destinations) if only is None else only
    watcher = None
    if watch and len(names) > 1:  # one set of inotify watches for all of them
        from agent.spool.shared import SharedWatcher

        watcher = SharedWatcher(config.spool.path)
    owns = [config.for_destination(name) for name in names]
    prepared_once = Shared.of(owns) if len(owns) > 1 else None
    agents: list[Agent] = []
    try:
        for name, own in zip(names, owns, strict=True):
            store = Store.open(own.state.path)
            try:
                first = not agents
                agents.append(
                    _agent(
                        own,
                        store,
                        watch=watch,
                        spool_feed=None if watcher is None else watcher.feed,
                        notifier=notifier if first else None,
                        metrics=metrics
                        if first or metrics is None
                        else metrics.for_destination(name),
                        shared=prepared_once,
                    )
                )
            except BaseException:
                store.close()
                raise
    except BaseException:
        for agent in agents:
            agent.close()
            agent.store.close()
        raise
    others = {
        name: config.state_of(name).path
        for name in config.destinations
        if name != config.destination.name
    }
    read_again = {name: config.destinations[name] for name in others}
    primary = agents[0].config.destination.name == config.destination.name
    if primary:  # a destination added since a hold was: it holds the same calls
        holds = agents[0].store.holds.all()
        for agent in agents[1:]:
            agent.store.holds.mirror(holds, now=time.time())
    elsewhere = Elsewhere(others, destinations=read_again) if others and primary else None
    return Fleet(agents, elsewhere=elsewhere)


@dataclass(frozen=True)
class Shared:
    """What the agents of several destinations share, so a recording is prepared once:
    the CDR source (one connection) and the staged copies."""

    source: SharedCdr | None
    copies: PreparedOnce

    @classmethod
    def of(cls, owns: list[config_module.Config]) -> Shared:
        """For the destinations' own configs (Config.for_destination), the first first."""
        from agent.cdr import open_source
        from agent.cdr.shared import SharedCdr
        from agent.media.once import PreparedOnce
        from agent.pipeline import Pipeline

        first = owns[0]  # the CSV index stays where the first destination's was
        source = open_source(first.cdr, state_folder=first.state.path.parent)
        recipes = [Pipeline.recipe_of(own) for own in owns]
        return cls(None if source is None else SharedCdr(source), PreparedOnce(recipes))

    def cdr(self) -> CdrSource | None:
        return None if self.source is None else self.source.asker()


def _paused(fleet: Fleet) -> str | None:
    """The one-line reason of the destinations a command left paused, None: none."""
    paused = fleet.paused()
    if not paused:
        return None
    if len(fleet.agents) == 1:
        return f"destination paused: {next(iter(paused.values()))}"
    return "; ".join(f"destination {name} paused: {why}" for name, why in paused.items())


def _run(config: config_module.Config, once: bool) -> None:
    from agent.systemd import Notifier

    metrics = None
    if not once and config.metrics.listen:  # else prometheus-client is never loaded
        from agent.metrics import Metrics

        metrics = Metrics(config.destination.name)
    fleet = _fleet(config, watch=not once, notifier=None if once else Notifier(), metrics=metrics)
    server = None
    if metrics is not None:
        from agent.metrics import MetricsServer

        healthy = fleet.primary.destination.health
        server = MetricsServer(metrics, config.metrics.listen, healthy=healthy)
        server.start()

    def on_signal(signum: int, _frame: object) -> None:
        fleet.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        fleet.run(once=once)
    finally:
        if server is not None:
            server.close()
        fleet.close()
    if once and (paused := _paused(fleet)) is not None:
        raise AgentError(paused)


@cli.command()
@json_option
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """How the sync is going: counts, backlog, last upload, each destination's state."""
    data = status_module.fleet_summary(ctx.readers(), ctx.config, time.time())
    if as_json:
        _print_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(show_header=False, box=None)
    table.add_row("host", data["host"])
    table.add_row("destination", _with_reason(data["destination"]))
    table.add_row("cdr", f"{data['cdr']['type']}: {_with_reason(data['cdr'])}")
    table.add_row("backlog", str(data["backlog"]))
    oldest = data["oldest_pending_seconds"]
    table.add_row("oldest waiting", "-" if oldest is None else f"{oldest:.0f} s")
    table.add_row("last upload", data["last_upload_at"] or "never")
    for state, count in data["counts"].items():
        table.add_row(f"  {state}", str(count))
    kept = data["retention"]
    free = kept["spool_free_percent"]
    table.add_row(
        "retention",
        f"{kept['removed']} original(s) out of the spool ({kept['removed_bytes'] / 1e6:.1f} MB),"
        f" {kept['holds']} hold(s), spool disk {'?' if free is None else f'{free:g}%'} free",
    )
    if data["last_error"]:
        err = data["last_error"]
        table.add_row("last error", f"{err['at']} #{err['id']} {err['path']}: {err['error']}")
    for name, each in data.get("destinations", {}).items():
        line = f"{each['type']} {each['where']}: {_with_reason(each['destination'])}"
        if "backlog" in each:
            oldest = each["oldest_pending_seconds"]
            line += (
                f", backlog {each['backlog']}"
                f" (oldest {'-' if oldest is None else f'{oldest:.0f} s'}),"
                f" {each['counts']['done']} done, {each['counts']['failed']} failed,"
                f" last upload {each['last_upload_at'] or 'never'}"
            )
        table.add_row(f"destination {name}", line)
    console.print(table)


def _with_reason(value: dict[str, Any]) -> str:
    state, reason = str(value["state"]), value.get("reason")
    return f"{state} ({reason})" if reason else state


@cli.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only recordings in this state.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Seen on or after DATE.")
@click.option("--limit", type=int, default=50, show_default=True)
@destination_option
@json_option
@pass_context
def list_(
    ctx: Context,
    state: str | None,
    since: datetime | None,
    limit: int,
    only: str | None,
    as_json: bool,
) -> None:
    """List recordings, newest first (with several destinations, each one's rows, named)."""
    after = since.timestamp() if since else None
    several = len(ctx.config.destinations) > 1
    found = [
        (name, row)
        for name, store in ctx.readers(only).items()
        for row in store.recent(state=state, seen_since=after, limit=limit)
    ]
    found.sort(key=lambda pair: pair[1].seen_at, reverse=True)
    found = found[:limit]
    if as_json:
        rows = [
            status_module.row_json(r) | ({"destination": n} if several else {}) for n, r in found
        ]
        _print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        *(["destination"] if several else []), "id", "state", "spool path", "remote path", "reason"
    )
    for name, r in found:
        cells = [str(r.id), r.state, r.path, r.remote_path or "", r.reason or ""]
        table.add_row(*([name] if several else []), *cells)
    Console().print(table)


@cli.command()
@click.argument("ref")
@destination_option
@json_option
@pass_context
def show(ctx: Context, ref: str, only: str | None, as_json: bool) -> None:
    """One recording by id, uniqueid, spool path or remote path, with its history; with
    several destinations, its state at each (an id is the first destination's, or that
    of --destination)."""
    spool = ctx.config.spool.path
    if Path(ref).is_absolute() and Path(ref).is_relative_to(spool):
        ref = Path(ref).relative_to(spool).as_posix()  # the full path an admin copied
    stores = ctx.readers(only)
    first_name, first = next(iter(stores.items()))
    row = first.find(ref)
    if row is None and not ref.isdigit():
        for name, store in stores.items():
            if (row := store.find(ref)) is not None:
                first_name, first = name, store
                break
    if row is None:
        raise AgentError(f"no recording matches {ref!r}")
    data = status_module.row_json(row)
    data["events"] = status_module.events(first, row.id)
    at: dict[str, dict[str, Any]] = {}
    if len(ctx.config.destinations) > 1:
        for name, store in stores.items():
            other = row if name == first_name else store.by_stem(row.stem)
            at[name] = (
                {"state": "unseen"} if other is None else status_module.destination_state(other)
            )
        data["destinations"] = at
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        if key not in ("events", "destinations"):
            click.echo(f"{key:16} {'' if value is None else value}")
    for name, state in at.items():
        where = state.get("remote_path") or ""
        why = state.get("reason") or ""
        click.echo(f"{'at ' + name:16} {state['state']} {where} {why}".rstrip())
    click.echo("history:")
    for event in data["events"]:
        click.echo(f"  {event['at']}  {event['event']:12} {event['detail'] or ''}")


@cli.command()
@click.argument("ref", metavar="UNIQUEID|REMOTE_PATH")
@click.option(
    "--expires",
    callback=_expiry,
    default="1h",
    show_default=True,
    help="How long the link works: 90s, 30m, 1h, 2d or seconds; at most 7 days.",
)
@one_destination_option
@pass_context
def url(ctx: Context, ref: str, expires: int, only: str | None) -> None:
    """A presigned download link for one shipped recording (s3 destinations), for a CRM
    or an e-mail: by its call's uniqueid, or by its path under the destination root (a
    value with a "/"). Signed here, with no request to the server; at the first
    destination, or at --destination."""
    from agent.transport import as_s3, check_remote, open_transport, root_path

    destination = ctx.one(only).destination
    if destination.type != "s3":
        raise AgentError(
            f"presigned links need {_type_key(destination.name)} = 's3'"
            f" (it is {destination.type!r}){_others_of(ctx.config, 's3')}"
        )
    if "/" in ref:
        remote = check_remote(ref)
    else:
        remote = _shipped_remote(ctx.readers(destination.name)[destination.name], ref)
    transport = open_transport(destination)
    try:
        s3 = as_s3(transport)
        assert s3 is not None  # the registry's "s3"
        click.echo(s3.presign(root_path(transport, remote), expires))
    finally:
        transport.close()


def _shipped_remote(store: Store, uniqueid: str) -> str:
    """The remote path of the call's one shipped recording; AgentError saying why not."""
    rows = store.by_uniqueid(uniqueid)
    if not rows:
        raise AgentError(f"no recording has uniqueid {uniqueid!r} (see `recsync list`)")
    done = [r.remote_path for r in rows if r.state == RecordingState.DONE and r.remote_path]
    if not done:
        why = f": {rows[0].reason}" if rows[0].reason else ""
        raise AgentError(
            f"recording {rows[0].id} ({uniqueid}) is {rows[0].state}, not shipped{why}"
        )
    if len(done) > 1:
        raise AgentError(
            f"uniqueid {uniqueid!r} has {len(done)} shipped recordings; name one: {', '.join(done)}"
        )
    return done[0]


@cli.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--failed", is_flag=True, help="Every failed recording.")
@click.option(
    "--quarantined", is_flag=True, help="Every quarantined recording (fix the cause first)."
)
@destination_option
@pass_context
def retry(
    ctx: Context, ids: tuple[int, ...], failed: bool, quarantined: bool, only: str | None
) -> None:
    """Try failed or quarantined recordings again now (the running agent picks them up),
    at every destination or at --destination (ids are the first destination's, or its)."""
    if not (ids or failed or quarantined):
        raise click.UsageError("name recording ids, --failed or --quarantined")
    states = [RecordingState.FAILED] * failed + [RecordingState.QUARANTINED] * quarantined
    config = ctx.config
    names = ctx.destinations(only)
    if ids and only is None:
        names = names[:1]  # an id is a row of one state database
    count = 0
    for name in names:
        path = config.state_of(name).path
        if name != config.destination.name and only is None and not path.exists():
            continue
        store = Store.open(path, create=False)
        click.get_current_context().call_on_close(store.close)
        count += store.retry(ids=ids, states=states, now=time.time())
    click.echo(f"{count} recording(s) queued again")


@cli.command()
@click.argument("name")
@json_option
@pass_context
def parse(ctx: Context, name: str, as_json: bool) -> None:
    """What a recording file name says (uses spool.patterns when the config exists)."""
    extensions: tuple[str, ...] = spoolnames.DEFAULT_EXTENSIONS
    patterns: tuple[spoolnames.CustomPattern, ...] = ()
    if ctx.config_path.exists() or ctx.config_path != config_module.DEFAULT_PATH:
        extensions, patterns = ctx.config.spool.extensions, ctx.config.spool.patterns
    recording = spoolnames.parse(Path(name).name, extensions=extensions, patterns=patterns)
    data = recording.to_json()
    if as_json:
        _print_json(data)
    else:
        for key, value in data.items():
            click.echo(f"{key:11} {'' if value is None else value}")


@cli.command()
@destination_option
@click.pass_context
def doctor(click_ctx: click.Context, only: str | None) -> None:
    """Check every dependency (config, spool, state, CDR, each destination) and say what
    to do; with several destinations each one's checks come under its name."""
    from agent.doctor import run_checks

    ctx: Context = click_ctx.obj
    try:
        config = ctx.config
    except AgentError as exc:
        click.echo(f"✗ config: {exc}")
        click_ctx.exit(1)
    ctx.destinations(only)  # an unknown name: the error names the configured ones
    click.echo(f"✓ config: {ctx.config_path}")
    several = len(config.destinations) > 1
    failed: dict[str | None, int] = {}
    block: str | None = None
    # Each check says in its own line what the agent's log lines would; those are shown
    # (under their check) only when --log-level asks for them.
    with log_module.held() as records:
        for name, check in run_checks(config, only=only):
            if several and name is not None and name != block:
                block = name
                each = config.destinations[name]
                click.echo(f"destination {name} ({each.type} {each.where}):")
            failed[name] = failed.get(name, 0) + (not check.ok)
            mark = "✗" if not check.ok else "!" if check.warning else "✓"
            click.echo(f"{mark} {check.name}: {check.detail}")
            for line in check.advice:
                click.echo(f"    {line}")
            if ctx.log_level is not None:
                for record in records:
                    click.echo(f"    log: {record.levelname.lower()} {record.getMessage()}")
            records.clear()
    total = sum(failed.values())
    if total:
        at = [name for name, count in failed.items() if count and name is not None]
        named = f"; failing: destination {', '.join(at)}" if several and at else ""
        raise AgentError(f"{total} check(s) failed{named}")


@cli.command("unit-paths")
@click.option(
    "--install",
    is_flag=True,
    help="Write it as /etc/systemd/system/recsync.service.d/recsync-paths.conf (as root)"
    " and reload systemd.",
)
@pass_context
def unit_paths(ctx: Context, install: bool) -> None:
    """The systemd drop-in that lets the service write the folders the config names
    (a local destination.root, the state folders) outside the unit's ReadWritePaths."""
    from agent import service_unit

    sandbox = service_unit.Sandbox.load(skip=service_unit.DROP_IN)
    if sandbox is None:
        raise AgentError(
            f"no {service_unit.UNIT} installed (looked in"
            f" {', '.join(str(d) for d in service_unit.UNIT_DIRS)})"
        )
    text, problems = service_unit.drop_in(ctx.config, sandbox)
    for problem in problems:
        click.echo(f"recsync: {problem}", err=True)
    if not install:
        click.echo(text or "# nothing to open: the unit lets the service write them all")
    else:
        target = service_unit.drop_in_path()
        changed = service_unit.install_drop_in(target, text)
        done = f"wrote {target}" if text is not None else f"nothing to open; no {target}"
        click.echo(done if changed else f"{done} (unchanged)", err=True)
        if changed:
            click.echo("if the service runs, restart it: systemctl restart recsync", err=True)
    if problems:
        raise AgentError("some folders cannot be opened by a drop-in (above)")


def _sftp_destination(ctx: Context, only: str | None) -> config_module.DestinationConfig:
    destination = ctx.one(only).destination
    if destination.type != "sftp":
        raise AgentError(
            f"{_type_key(destination.name)} is {destination.type!r}: this is for 'sftp'"
            f"{_others_of(ctx.config, 'sftp')}"
        )
    return destination


def _others_of(config: config_module.Config, kind: str) -> str:
    """The hint naming the destinations of `kind` there are, for --destination."""
    names = [n for n, d in config.destinations.items() if d.type == kind]
    return f"; {kind} destinations: {', '.join(names)} (--destination NAME)" if names else ""


@cli.command("trust-host")
@click.option("--yes", is_flag=True, help="Trust the key without asking (check it first!).")
@one_destination_option
@pass_context
def trust_host(ctx: Context, yes: bool, only: str | None) -> None:
    """Fetch the webserver's SSH host key, show its fingerprint, and add it to known_hosts
    (the first destination's, or --destination's)."""
    from agent.transport import sshkeys

    destination = _sftp_destination(ctx, only)
    assert destination.host is not None
    key = sshkeys.host_key_of(destination.host, destination.port)
    where = sshkeys.known_hosts_entry(destination.host, destination.port, key).split()[0]
    click.echo(
        f"{where} offers a {key.get_algorithm()} key, fingerprint {sshkeys.fingerprint(key)}"
    )
    known = sshkeys.known_keys(destination.known_hosts, destination.host, destination.port)
    if known and all(sshkeys.fingerprint(k) != sshkeys.fingerprint(key) for k in known):
        click.echo(
            f"WARNING: {destination.known_hosts} holds a DIFFERENT key for {where}: the"
            " server was reinstalled, or someone is in the middle. Check before trusting."
        )
    if not yes and not click.confirm(f"Trust it (written to {destination.known_hosts})?"):
        raise AgentError("not trusted; nothing written")
    sshkeys.trust(destination.known_hosts, destination.host, destination.port, key)
    give_to_folder_owner(destination.known_hosts)
    click.echo(f"trusted: {destination.known_hosts}")


@cli.command()
@one_destination_option
@pass_context
def keygen(ctx: Context, only: str | None) -> None:
    """Create the agent's SSH key pair (ed25519) at the first destination's key_file, or
    --destination's; print the line for authorized_keys."""
    from agent.transport import sshkeys

    # Without --destination, whatever the first one's type: the package makes the key
    # at install, before the admin sets type = "sftp".
    key_file = (ctx.config.destination if only is None else _sftp_destination(ctx, only)).key_file
    public = Path(f"{key_file}.pub")
    if key_file.exists():
        click.echo(f"{key_file} exists (not overwritten); its public key:", err=True)
        click.echo(public.read_text().strip() if public.exists() else "(no .pub file)")
        return
    key_file.parent.mkdir(parents=True, exist_ok=True)
    line = sshkeys.keygen(key_file, comment=f"recsync@{socket.gethostname()}")
    for path in (key_file, public):
        give_to_folder_owner(path)
    click.echo(
        f"wrote {key_file}; add this line to the webserver's ~/.ssh/authorized_keys:", err=True
    )
    click.echo(line)


@cli.command()
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Only files modified since.")
@click.option("--dry-run", is_flag=True, help="Say what would be shipped; change nothing.")
@destination_option
@pass_context
def backfill(ctx: Context, since: datetime | None, dry_run: bool, only: str | None) -> None:
    """Ship the recordings the first start left out (older than spool.backfill_days, or
    started before a destination's `since`), to every destination or to --destination."""
    from agent import backfill as backfill_module

    config = ctx.config
    several = len(config.destinations) > 1
    queued: dict[str, tuple[Store, list[int]]] = {}
    for name in ctx.destinations(only):
        # Created if need be: backfill may come first.
        store = Store.open(config.state_of(name).path)
        click.get_current_context().call_on_close(store.close)
        found = backfill_module.find(
            store, config.spool.path, config.spool.extensions, since.timestamp() if since else None
        )
        size = sum(c.size for c in found) / 1e6
        at = f" for destination {name}" if several else ""
        if dry_run or not found:
            verb = "would be queued" if found else "to backfill"
            click.echo(f"{len(found)} recording(s), {size:.1f} MB, {verb}{at}")
            continue
        ids = backfill_module.queue(
            store, config.spool.path, found, now=time.time(), rate=config.spool.backfill_rate
        )
        click.echo(f"{len(ids)} recording(s), {size:.1f} MB, queued{at}")
        queued[name] = (store, ids)
    if not queued:
        return
    try:
        with exclusive(config.state.path):
            for name, (store, ids) in queued.items():
                _ship_backfill(config.for_destination(name), store, ids)
    except AlreadyRunning:
        click.echo(
            "the running agent ships them; following its progress"
            " (Ctrl-C stops watching, not shipping)"
        )
        for store, ids in queued.values():
            _follow(store, ids, step=None)


@contextlib.contextmanager
def _one_shot(config: config_module.Config, store: Store) -> Iterator[Agent]:
    """An agent for one command (no watching), closed when the command is done; `config`
    is its destination's (Config.for_destination)."""
    agent = _agent(config, store, watch=False)
    try:
        yield agent
    finally:
        agent.close()


def _ship_backfill(config: config_module.Config, store: Store, ids: list[int]) -> None:
    with _one_shot(config, store) as agent:
        agent.start(time.time())
        _follow(store, ids, step=lambda: agent.run_once(time.time()))
    if agent.destination.paused_reason:
        raise AgentError(f"destination paused: {agent.destination.paused_reason}")


def _follow(store: Store, ids: list[int], step: Callable[[], float | None] | None) -> None:
    """A progress bar with an ETA until every queued recording is shipped or out of
    the queue; `step` does the work (None: another process does)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from agent.backfill import progress

    columns = (TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("backfill", total=len(ids))
        while True:
            next_due = step() if step else None
            done, total = progress(store, ids)
            bar.update(task, completed=done)
            if done == total:
                return
            wait = 0.5 if next_due is None else min(0.5, max(0.0, next_due - time.time()))
            time.sleep(wait)


@cli.group()
def state() -> None:
    """The state database."""


@state.command("rebuild")
@click.option("--force", is_flag=True, help="Replace the database even when it is healthy.")
@one_destination_option
@pass_context
def state_rebuild(ctx: Context, force: bool, only: str | None) -> None:
    """Make a new state database from the destination's manifests and the spool (the
    agent must be stopped; the old file is kept beside it): the first destination's, or
    --destination's."""
    from agent.rebuild import rebuild
    from agent.transport import open_transport

    config = ctx.one(only)
    with exclusive(ctx.config.state.path):  # the agent's lock, whichever destination
        transport = open_transport(config.destination)
        try:
            report = rebuild(config, transport, force=force, now=time.time())
        finally:
            transport.close()
    click.echo(
        f"rebuilt {config.state.path} from {report.days} day manifest(s):"
        f" {report.restored} shipped recording(s), {report.in_spool} of them still in the spool"
    )
    if report.kept:
        click.echo(f"the old database is kept as {report.kept}")
    if report.dropped:
        click.echo(f"manifest entries not usable (see the log): {report.dropped}")
    if report.expired:
        click.echo(f"expired at the destination (never shipped again): {report.expired}")
    if report.unreadable:
        click.echo(f"unreadable manifests (those days' recordings ship again): {report.unreadable}")
    click.echo(
        "recordings in the spool but in no manifest ship when the agent starts"
        " (older than spool.backfill_days: `recsync backfill`)"
    )


@cli.group()
def index() -> None:
    """The pages and manifests at the destination."""


@index.command("rebuild")
@pass_context
def index_rebuild(ctx: Context) -> None:
    """Write every day page and manifest, the root page and status.json again from the
    state database (the agent must be stopped; nothing is uploaded again)."""
    config = ctx.config
    several = len(config.destinations) > 1
    with exclusive(config.state.path):
        for name in config.destinations:
            own = config.for_destination(name)
            store = Store.open(own.state.path, create=False)
            click.get_current_context().call_on_close(store.close)
            with _one_shot(own, store) as agent:
                days = agent.rebuild_index(time.time())
            at = f"destination {name} " if several else "destination "
            if agent.destination.paused_reason:
                raise AgentError(f"{at}paused: {agent.destination.paused_reason}")
            at = f" at destination {name}" if several else ""
            click.echo(f"rewrote the pages and manifests of {days} day(s){at}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Say what each rule would remove; change nothing.")
@json_option
@pass_context
def retention(ctx: Context, dry_run: bool, as_json: bool) -> None:
    """Apply [retention] now: shipped originals whose remote copy checks out again leave
    the spool (deleted, or moved to retention.move_to). The running agent does this by
    itself every few minutes."""
    from agent.retention_report import report_json, report_lines

    config = ctx.config
    rules = config.retention
    if not (rules.deletes or rules.min_free_percent > 0 or rules.destination_days > 0):
        raise AgentError("retention is off: set retention.spool_days (see config.example.toml)")
    if dry_run:
        report = _dry_retention(ctx)
    else:
        try:
            with (
                exclusive(config.state.path),
                _one_shot(ctx.one(None), ctx.writer()) as agent,
                _elsewhere(config) as elsewhere,
            ):
                agent.retention.elsewhere = elsewhere.missing
                agent.retention.recheck = elsewhere.recheck
                report = agent.apply_retention(time.time())
        except AlreadyRunning:
            raise AgentError(
                "the agent is running and applies retention itself every few minutes;"
                " `recsync retention --dry-run` shows what it would remove"
            ) from None
    if as_json:
        _print_json(report_json(report))
    else:
        for line in report_lines(report):
            click.echo(line)
    if report.stopped and not dry_run:
        raise AgentError(f"retention stopped: {report.stopped}")


def _dry_retention(ctx: Context) -> Any:
    from agent.roles.destination import Destination
    from agent.roles.health import NoMetrics
    from agent.roles.retention import Retention
    from agent.transport import open_transport

    config = ctx.config
    store = ctx.reader()
    transport = open_transport(config.destination)  # asked nothing in a dry run
    try:
        with _elsewhere(config) as elsewhere:
            return Retention(
                config=config.retention,
                spool=config.spool.path,
                store=store,
                transport=transport,
                destination=Destination(transport=transport, store=store, summary=lambda now: {}),
                metrics=NoMetrics(),
                elsewhere=elsewhere.missing,  # a dry run reads no copy again
            ).apply(time.time(), dry_run=True)
    finally:
        transport.close()


@contextlib.contextmanager
def _elsewhere(config: config_module.Config) -> Iterator[Elsewhere]:
    """What the spool's retention asks of the other destinations: their state databases,
    and their copies read again."""
    from agent.roles.elsewhere import Elsewhere

    names = [n for n in config.destinations if n != config.destination.name]
    elsewhere = Elsewhere(
        {n: config.state_of(n).path for n in names},
        destinations={n: config.destinations[n] for n in names},
    )
    try:
        yield elsewhere
    finally:
        elsewhere.close()


HOLD_KINDS = (
    click.option("--number", help="Calls from or to this number (digits only are compared)."),
    click.option("--uniqueid", help="The call with this uniqueid (or linkedid)."),
    click.option("--day", help="Every recording of this day, YYYY-MM-DD."),
)


def _hold_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(HOLD_KINDS):
        command = option(command)
    return command


def _one_hold(number: str | None, uniqueid: str | None, day: str | None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("number", number), ("uniqueid", uniqueid), ("day", day)) if v]
    if len(given) != 1:
        raise click.UsageError("name exactly one of --number, --uniqueid, --day")
    return given[0]


@cli.group()
def hold() -> None:
    """Legal holds: recordings no retention rule deletes."""


@hold.command("add")
@_hold_options
@pass_context
def hold_add(ctx: Context, number: str | None, uniqueid: str | None, day: str | None) -> None:
    """Hold the recordings a number, a uniqueid or a day names (now and to come)."""
    kind, value = _one_hold(number, uniqueid, day)
    store = Store.open(ctx.first_state)  # a hold may come before the first run
    click.get_current_context().call_on_close(store.close)
    added = store.holds.add(kind, value, now=time.time())
    _mirror_holds(ctx.config, store)
    click.echo(f"hold on {kind} {value!r} {'added' if added else 'was there already'}")


def _mirror_holds(config: config_module.Config, first: Store) -> None:
    """The first destination's holds, copied to every other's state database (each
    destination's own retention and `forget` read its own)."""
    holds = first.holds.all()
    for name in list(config.destinations)[1:]:
        other = Store.open(config.state_of(name).path)
        try:
            other.holds.mirror(holds, now=time.time())
        finally:
            other.close()


@hold.command("remove")
@_hold_options
@pass_context
def hold_remove(ctx: Context, number: str | None, uniqueid: str | None, day: str | None) -> None:
    """Lift a hold (named as it was added)."""
    kind, value = _one_hold(number, uniqueid, day)
    store = ctx.writer()
    if not store.holds.remove(kind, value, now=time.time()):
        raise AgentError(f"no hold on {kind} {value!r}")
    _mirror_holds(ctx.config, store)
    click.echo(f"hold on {kind} {value!r} removed")


@hold.command("list")
@json_option
@pass_context
def hold_list(ctx: Context, as_json: bool) -> None:
    """Every hold and how many recordings it covers."""
    holds = ctx.reader().holds.all()
    rows = [
        {
            "kind": h.kind,
            "value": h.value,
            "created_at": status_module.iso(h.created_at),
            "recordings": h.recordings,
        }
        for h in holds
    ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no holds")
    for row in rows:
        click.echo(
            f"{row['kind']:9} {row['value']:24} {row['recordings']:6} recording(s)"
            f"  since {row['created_at']}"
        )


@cli.command()
@click.option("--number", required=True, help="The caller or destination number to erase.")
@click.option("--yes", is_flag=True, help="Do it (without: show what it would do).")
@click.option(
    "--spool", "from_spool", is_flag=True, help="Remove the originals from the spool too."
)
@pass_context
def forget(ctx: Context, number: str, yes: bool, from_spool: bool) -> None:
    """Erase every recording of a number at every destination (and with --spool, in the
    spool); the pages and manifests are rewritten, the CRM told (the agent must be stopped)."""
    from agent import forget as forget_module

    config = ctx.config
    several = len(config.destinations) > 1
    where = "the destination and the spool" if from_spool else "the destination"
    if several:
        where = "every destination and the spool" if from_spool else "every destination"
    count = 0
    try:
        with exclusive(config.state.path):
            for name in config.destinations:
                own = config.for_destination(name)
                if name != config.destination.name and not own.state.path.exists():
                    continue  # never run: it has nothing to erase
                store = Store.open(own.state.path, create=False)
                click.get_current_context().call_on_close(store.close)
                at = f" at destination {name}" if several else ""
                found = forget_module.plan(store, number)
                for rid, remote, path, _ in found.held:
                    click.echo(f"held, kept: #{rid} {remote or path}{at}")
                if not yes:
                    for rid, remote, path, _ in found.erase:
                        click.echo(f"would erase: #{rid} {remote or path}{at}")
                    count += len(found.erase)
                    continue
                count += _forget_at(own, store, found, from_spool=from_spool)
    except AlreadyRunning:
        raise AgentError("stop the agent first (systemctl stop recsync), then forget") from None
    if not yes:
        click.echo(f"{count} recording(s) would be erased from {where}; --yes does it")
        return
    click.echo(f"{count} recording(s) erased from {where}")


def _forget_at(config: config_module.Config, store: Store, found: Any, *, from_spool: bool) -> int:
    from agent import forget as forget_module

    with _one_shot(config, store) as agent:
        now = time.time()
        agent.destination.probe(now)
        if agent.destination.paused_reason:
            several = len(config.destinations) > 1
            at = f"destination {config.destination.name}" if several else "destination"
            raise AgentError(f"{at} paused: {agent.destination.paused_reason}")
        count = forget_module.forget(
            found,
            store=store,
            transport=agent.transport,
            spool=config.spool.path if from_spool else None,
            move_to=config.retention.move_to,
            notify=agent.outbox is not None,
            now=now,
        )
        agent.publisher.publish(now)
        if agent.outbox is not None:
            agent.outbox.deliver(now)
    return count


@cli.command("check-config")
@pass_context
def check_config(ctx: Context) -> None:
    """Validate the configuration file; exit non-zero naming the first bad key."""
    config = ctx.config
    if len(config.destinations) > 1:
        each = ", ".join(f"{n}: {d.type} {d.where}" for n, d in config.destinations.items())
        click.echo(f"{ctx.config_path}: OK (spool {config.spool.path}, destinations {each})")
        return
    click.echo(
        f"{ctx.config_path}: OK (spool {config.spool.path}, "
        f"destination {config.destination.type} {config.destination.where})"
    )


def main(argv: list[str] | None = None) -> None:
    entry: Callable[..., Any] = cli.main
    entry(args=argv if argv is not None else sys.argv[1:], prog_name="recsync")
