"""The configuration file: TOML in, frozen dataclasses out, every error naming its key."""

from __future__ import annotations

import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.errors import ConfigError
from agent.http import where
from agent.secrets import refuse_exposed_secrets
from agent.shipnames import DEFAULT_TEMPLATE, NameTemplate
from agent.spoolnames import DEFAULT_EXTENSIONS, CustomPattern, compile_custom_pattern

DEFAULT_PATH = Path("/etc/recsync/config.toml")
PRESIGN_MAX = 7 * 24 * 3600  # seconds a presigned link can last: SigV4's limit

CDR_TYPES = ("auto", "mysql", "sqlite", "csv", "none")
# Keys each cdr.type accepts besides type, wait_seconds and asterisk_conf_dir.
CDR_KEYS = {
    "auto": {"freepbx_conf", "amportal_conf"},
    "mysql": {"host", "port", "socket", "user", "password_file", "database", "table"},
    "sqlite": {"path", "table"},
    "csv": {"path", "columns"},
    "none": set(),
}
DESTINATION_TYPES = ("local", "sftp", "s3")
LAYOUTS = ("single", "sites")
# Keys each destination.type accepts besides type (and layout, which every type has).
DESTINATION_KEYS = {
    "local": {"root"},
    "sftp": {
        "root",
        "host",
        "port",
        "user",
        "key_file",
        "key_passphrase_file",
        "password_file",
        "known_hosts",
        "connections",
        "verify",
        "bwlimit_kbps",
        "timeout_seconds",
        "file_mode",
        "dir_mode",
        "sftp_client",
    },
    "s3": {
        "endpoint",
        "region",
        "bucket",
        "prefix",
        "addressing_style",
        "access_key_id",
        "secret_access_key_file",
        "storage_class",
        "sse",
        "kms_key_id",
        "ca_file",
        "connections",
        "bwlimit_kbps",
        "timeout_seconds",
        "multipart_threshold_mb",
        "object_tags",
    },
}
# Keys every destination.type accepts: what is shipped there, and from when.
DESTINATION_COMMON = {
    "type",
    "layout",
    "pages",
    "since",
    "naming_template",
    "transcode_format",
    "transcode_bitrate",
}
DEFAULT_DESTINATION = "default"  # the name of the keys set in [destination] itself
# A destination's name is a folder name under the state folder and a metrics label.
DESTINATION_NAME = re.compile(r"[a-z0-9_-]{1,32}")
SSE_MODES = ("none", "AES256", "aws:kms")
SFTP_CLIENTS = ("auto", "openssh", "asyncssh")
TRANSCODE_FORMATS = ("none", "mp3")
ON_LOW_DISK = ("alert", "prune")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, kw_only=True)
class SpoolConfig:
    path: Path
    extensions: tuple[str, ...]
    settle_seconds: float
    stale_seconds: float
    reconcile_minutes: float
    backfill_days: float
    backfill_rate: float  # files per second `recsync backfill` queues; 0 = as fast as it can
    patterns: tuple[CustomPattern, ...]


@dataclass(frozen=True, kw_only=True)
class StateConfig:
    path: Path
    staging: Path


@dataclass(frozen=True, kw_only=True)
class CdrConfig:
    type: str
    wait_seconds: float | None  # None: 120 s, more when Asterisk's CDR batch mode is on
    asterisk_conf_dir: Path
    freepbx_conf: Path
    amportal_conf: Path
    host: str
    port: int
    socket: Path | None
    user: str
    password_file: Path | None
    database: str
    table: str
    path: Path | None  # None: the type's standard file
    columns: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class NamingConfig:
    template: str  # validated: agent.shipnames.NameTemplate accepts it


@dataclass(frozen=True, kw_only=True)
class TagsConfig:
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class TranscodeConfig:
    format: str  # "none" or "mp3"
    bitrate: int  # kbit/s


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    enabled: bool
    title: str


@dataclass(frozen=True, kw_only=True)
class WebhookConfig:
    url: str | None  # None: no webhook
    secret_file: Path | None
    timeout_seconds: float
    presign_seconds: int  # s3: a presigned GET URL in each webhook; 0 = off


@dataclass(frozen=True, kw_only=True)
class AlertsConfig:
    """The `[alerts]` table. With neither a command nor a webhook incidents are only logged."""

    command: tuple[str, ...] | None
    webhook: str | None
    after_failures: int
    backlog_minutes: float


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    listen: str  # "host:port"; "" turns the metrics endpoint off


@dataclass(frozen=True, kw_only=True)
class DestinationConfig:
    type: str
    layout: str  # "single": this agent owns the root; "sites": it owns <root>/<site>/
    site: str | None  # the folder under the root this agent owns; None with layout "single"
    root: Path  # local: resolved; sftp: the path on the server, as written
    host: str | None
    port: int
    user: str | None
    key_file: Path
    key_passphrase_file: Path | None
    password_file: Path | None
    known_hosts: Path
    connections: int
    verify: str
    bwlimit_kbps: int
    timeout_seconds: float
    file_mode: int
    dir_mode: int
    sftp_client: str  # "auto": OpenSSH's sftp pushes the bytes where it can log in alone
    endpoint: str  # s3: "" is AWS
    region: str
    bucket: str | None
    prefix: str
    addressing_style: str
    access_key_id: str | None
    secret_access_key_file: Path | None
    storage_class: str | None
    sse: str
    kms_key_id: str | None
    ca_file: Path | None
    multipart_threshold_mb: float  # s3: larger recordings go up in parts
    object_tags: bool  # s3: tag objects (B2 and R2 reject tagging)
    # What this destination gets, where it differs from the rest of the config (None:
    # the [index], [naming] and [transcode] tables decide).
    pages: bool | None  # day pages and the root page; manifests are always written
    since: date | None  # calls that started before this day are shipped by `backfill` only
    naming_template: str | None
    transcode_format: str | None
    transcode_bitrate: int | None
    name: str = DEFAULT_DESTINATION

    @property
    def where(self) -> str:
        """The destination as an admin names it (and the site this agent owns there)."""
        site = "" if self.site is None else f" (site {self.site})"
        if self.type == "s3":
            return f"s3://{self.bucket}/{self.prefix}{site}"
        if self.type == "sftp":
            return f"{self.user}@{self.host}:{self.root}{site}"
        return f"{self.root}{site}"


@dataclass(frozen=True, kw_only=True)
class RetentionConfig:
    """The `[retention]` table. Off unless set: nothing is ever deleted by default."""

    spool_days: float  # an original older than this (since it shipped) leaves the spool; 0 = off
    move_to: Path | None  # moved there (same relative path) instead of deleted
    min_free_percent: float  # the spool's disk below this: an alert; 0 = off
    on_low_disk: str  # "alert", or "prune": the oldest verified originals go first
    destination_days: float  # day folders older than this leave the destination; 0 = off

    @property
    def deletes(self) -> bool:
        """Whether any rule may take an original out of the spool."""
        return self.spool_days > 0 or (self.min_free_percent > 0 and self.on_low_disk == "prune")


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    level: str


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    site: str  # this PBX's name at a shared destination (destination.layout = "sites")


@dataclass(frozen=True, kw_only=True)
class Config:
    agent: AgentConfig
    spool: SpoolConfig
    state: StateConfig
    cdr: CdrConfig
    naming: NamingConfig
    tags: TagsConfig
    transcode: TranscodeConfig
    destination: DestinationConfig
    index: IndexConfig
    webhook: WebhookConfig
    metrics: MetricsConfig
    alerts: AlertsConfig
    retention: RetentionConfig
    log: LogConfig
    # Every destination by name, in the file's order; `destination` is the first ("default"
    # when [destination] sets keys itself): the one that shares the spool's retention.
    destinations: Mapping[str, DestinationConfig]
    source: Path | None = None  # the file it was read from, for messages

    def state_of(self, name: str) -> StateConfig:
        """Where a destination keeps its state: the default one at state.path (as before
        there were several), another under `<state folder>/destinations/<name>/`."""
        if name == DEFAULT_DESTINATION:
            return self.state
        folder = self.state.path.parent / "destinations" / name
        return StateConfig(path=folder / "state.db", staging=folder / "staging")

    def for_destination(self, name: str) -> Config:
        """The config one destination's agent runs with: its state, its pages, names and
        codec; only the first destination removes originals from the spool, only it
        sends the webhook (a CRM hears of each call once)."""
        destination = self.destinations[name]
        first = name == self.destination.name
        retention = self.retention
        if not first:
            retention = replace(
                retention, spool_days=0, move_to=None, min_free_percent=0, on_low_disk="alert"
            )
        pages = self.index.enabled if destination.pages is None else destination.pages
        return replace(
            self,
            destination=destination,
            state=self.state_of(name),
            naming=NamingConfig(template=destination.naming_template or self.naming.template),
            transcode=TranscodeConfig(
                format=destination.transcode_format or self.transcode.format,
                bitrate=destination.transcode_bitrate or self.transcode.bitrate,
            ),
            index=replace(self.index, enabled=pages),
            webhook=self.webhook if first else replace(self.webhook, url=None),
            retention=retention,
        )


# --- value checkers: each takes (key, raw value, config dir) and returns the typed value ---

Checker = Callable[[str, Any, Path], Any]


def _number(minimum: float = 0) -> Checker:
    def check(key: str, value: Any, _base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if value < minimum:
            raise ConfigError(f"{key}: must be at least {minimum}, got {value!r}")
        return float(value)

    return check


def _path(key: str, value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path (a non-empty string), got {value!r}")
    # Relative paths are taken from the config file's folder, so a config can travel with its data.
    return (base / Path(value).expanduser()).resolve()


def _percent(key: str, value: Any, base: Path) -> float:
    number: float = _number()(key, value, base)
    if number > 100:
        raise ConfigError(f"{key}: a percentage from 0 to 100, got {value!r}")
    return number


def _choice(choices: tuple[str, ...]) -> Checker:
    def check(key: str, value: Any, _base: Path) -> str:
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}; got {value!r}")
        return str(value)

    return check


def _integer(low: int, high: int | None = None, what: str = "a whole number") -> Checker:
    def check(key: str, value: Any, _base: Path) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise ConfigError(f"{key}: expected {what} {bounds}, got {value!r}")
        return value

    return check


def _endpoint(key: str, value: Any, _base: Path) -> str:
    """ "" (AWS) or an http(s) URL with a host and nothing after it but a port."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ConfigError(f'{key}: expected https://host[:port] (or "" for AWS): {value!r}')
    return value.rstrip("/")


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _bucket(key: str, value: Any, _base: Path) -> str:
    if not isinstance(value, str) or not _BUCKET.match(value) or ".." in value:
        raise ConfigError(f"{key}: not an S3 bucket name (3-63 of a-z 0-9 . -): {value!r}")
    return value


def _prefix(key: str, value: Any, _base: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    prefix = value.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ConfigError(f"{key}: not a plain folder path: {value!r}")
    return prefix


def _text(key: str, value: Any, _base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _identifier(key: str, value: Any, _base: Path) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value):
        raise ConfigError(f"{key}: expected a table or database name (letters, digits, _)")
    return value


def _names(key: str, value: Any, _base: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key}: expected a list of column names, got {value!r}")
    return tuple(value)


def _mode(key: str, value: Any, _base: Path) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise ConfigError(f'{key}: expected an octal mode as a string, like "0644"; got {value!r}')
    return int(value, 8)


def _argv(key: str, value: Any, _base: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{key}: expected a list: the program, then its arguments (no shell),"
            f' like ["/usr/local/bin/page-oncall", "recsync"]; got {value!r}'
        )
    if not value[0]:
        raise ConfigError(f"{key}: the program name is empty")
    return tuple(value)


def parse_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" or "[v6 address]:port"; ValueError saying what is wrong. (Here,
    not in agent.metrics: reading the config must not load prometheus-client.)"""
    example = 'give "host:port", e.g. "127.0.0.1:9464" or "[::1]:9464"'
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"metrics.listen {listen!r}: {example}")
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics.listen {listen!r}: bad port {port!r} (0-65535), {example}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"metrics.listen {listen!r}: put an IPv6 address in brackets, {example}")
    if not host or any(c in host for c in "[] \t/"):
        raise ValueError(f"metrics.listen {listen!r}: bad host {host!r}, {example}")
    return host, int(port)


def _listen(key: str, value: Any, _base: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(f'{key}: expected "host:port" or "" (off), got {value!r}')
    if value:
        try:
            parse_listen(value)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return value


def _url(key: str, value: Any, _base: Path) -> str:
    if (
        not isinstance(value, str)
        or not re.fullmatch(r"https?://[\x21-\x7e]+", value)
        or not urlsplit(value).hostname
    ):
        shown = where(value) if isinstance(value, str) else repr(value)  # no token in logs
        raise ConfigError(f"{key}: expected an http:// or https:// URL with a host, got {shown}")
    return value


def _date(key: str, value: Any, _base: Path) -> date:
    if isinstance(value, date) and not hasattr(value, "hour"):  # TOML's bare date
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected a date, YYYY-MM-DD (like 2024-03-15), got {value!r}")


def _bool(key: str, value: Any, _base: Path) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


# A site is one folder name under a shared root, in URLs and in S3 keys: plain letters,
# digits, "-" and "_" need no escaping anywhere, and no dot rules out ".", ".." and the
# agent's temporary ".recsync-" names. "static" is the root page's own folder.
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
RESERVED_SITES = frozenset({"static"})


def _site(key: str, value: Any, _base: Path) -> str:
    if not isinstance(value, str) or not SITE_NAME.fullmatch(value):
        raise ConfigError(
            f"{key}: expected a folder name of letters, digits, '-' and '_' (at most 63,"
            f" starting with a letter or digit), got {value!r}"
        )
    if value.lower() in RESERVED_SITES:
        raise ConfigError(f"{key}: {value!r} is the root page's own folder; choose another name")
    return value


def default_site(hostname: str | None = None) -> str:
    """The host's short name made a safe site name: "PBX-1.example.com" -> "pbx-1"."""
    short = (hostname if hostname is not None else socket.gethostname()).split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", short).strip("-_")[:63] or "pbx"
    return f"{name}-pbx" if name in RESERVED_SITES else name


def _template(key: str, value: Any, _base: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    try:
        NameTemplate(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return value


def _extensions(key: str, value: Any, _base: Path) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.isalnum() for v in value)
    ):
        raise ConfigError(f"{key}: expected a list of file extensions without dots, got {value!r}")
    return tuple(value)


def _patterns(key: str, value: Any, _base: Path) -> tuple[CustomPattern, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of {{name, regex}} tables, got {value!r}")
    compiled = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict) or set(item) != {"name", "regex"}:
            raise ConfigError(f"{where}: expected exactly the keys name and regex, got {item!r}")
        if not all(isinstance(item[k], str) and item[k] for k in ("name", "regex")):
            raise ConfigError(f"{where}: name and regex must be non-empty strings")
        try:
            compiled.append(compile_custom_pattern(item["name"], item["regex"]))
        except ValueError as exc:
            raise ConfigError(f"{where}.regex: {exc}") from exc
    return tuple(compiled)


_PORT = _integer(1, 65535, "a TCP port")

# One table of every key: its default (None: unset) and its checker. Keys required for
# one type only (destination.root, bucket ...) are checked in _destination().
SCHEMA: dict[str, dict[str, tuple[Any, Checker]]] = {
    "spool": {
        "path": ("/var/spool/asterisk/monitor", _path),
        "extensions": (list(DEFAULT_EXTENSIONS), _extensions),
        "settle_seconds": (5, _number()),
        "stale_seconds": (900, _number()),
        "reconcile_minutes": (10, _number(minimum=0.01)),
        "backfill_days": (7, _number()),
        "backfill_rate": (10, _number()),
        "patterns": ([], _patterns),
    },
    "state": {
        "path": ("/var/lib/recsync/state.db", _path),
        "staging": ("/var/lib/recsync/staging", _path),
    },
    "cdr": {
        "type": ("auto", _choice(CDR_TYPES)),
        "wait_seconds": (None, _number()),
        "asterisk_conf_dir": ("/etc/asterisk", _path),
        "freepbx_conf": ("/etc/freepbx.conf", _path),
        "amportal_conf": ("/etc/amportal.conf", _path),
        "host": ("localhost", _text),
        "port": (3306, _PORT),
        "socket": (None, _path),
        "user": ("freepbxuser", _text),
        "password_file": (None, _path),
        "database": ("asteriskcdrdb", _identifier),
        "table": ("cdr", _identifier),
        "path": (None, _path),
        "columns": ([], _names),
    },
    "naming": {
        "template": (DEFAULT_TEMPLATE, _template),
    },
    "tags": {
        "enabled": (True, _bool),
    },
    "transcode": {
        "format": ("none", _choice(TRANSCODE_FORMATS)),
        "bitrate": (16, _integer(8, 320, "a bitrate in kbit/s")),
    },
    "agent": {
        "site": (None, _site),  # None: the host's short name, made safe (default_site)
    },
    "destination": {
        "type": ("local", _choice(DESTINATION_TYPES)),
        "layout": ("single", _choice(LAYOUTS)),
        "root": (None, _text),  # local and sftp: required; made a Path in _destination()
        "host": (None, _text),
        "port": (22, _PORT),
        "user": (None, _text),
        "key_file": ("/var/lib/recsync/id_ed25519", _path),
        "key_passphrase_file": (None, _path),
        "password_file": (None, _path),
        "known_hosts": ("/var/lib/recsync/known_hosts", _path),
        "connections": (4, _integer(1, 64)),
        "verify": ("size", _choice(("size", "sha256"))),
        "bwlimit_kbps": (0, _integer(0)),
        "timeout_seconds": (30, _number(minimum=1)),
        "file_mode": ("0644", _mode),
        "dir_mode": ("0755", _mode),
        "sftp_client": ("auto", _choice(SFTP_CLIENTS)),
        "endpoint": ("", _endpoint),
        "region": ("us-east-1", _text),
        "bucket": (None, _bucket),
        "prefix": ("", _prefix),
        "addressing_style": ("auto", _choice(("auto", "path", "virtual"))),
        "access_key_id": (None, _text),
        "secret_access_key_file": (None, _path),
        "storage_class": (None, _text),
        "sse": ("none", _choice(SSE_MODES)),
        "kms_key_id": (None, _text),
        "ca_file": (None, _path),
        # An hour of 16 kHz stereo WAV is 230 MB: ordinary calls stay single PUTs.
        "multipart_threshold_mb": (512, _number(minimum=5)),
        "object_tags": (False, _bool),
        "pages": (None, _bool),
        "since": (None, _date),
        "naming_template": (None, _template),
        "transcode_format": (None, _choice(TRANSCODE_FORMATS)),
        "transcode_bitrate": (None, _integer(8, 320, "a bitrate in kbit/s")),
    },
    "index": {
        "enabled": (True, _bool),
        "title": ("Call recordings", _text),
    },
    "webhook": {
        "url": (None, _url),
        "secret_file": (None, _path),
        "timeout_seconds": (5, _number(minimum=0.1)),
        "presign_seconds": (0, _integer(0, PRESIGN_MAX, "a number of seconds")),
    },
    "metrics": {
        "listen": ("127.0.0.1:9464", _listen),
    },
    "alerts": {
        "command": (None, _argv),
        "webhook": (None, _url),
        "after_failures": (5, _integer(1, 64)),
        "backlog_minutes": (60, _number(minimum=0.01)),
    },
    "retention": {
        "spool_days": (0, _number()),
        "move_to": (None, _path),
        "min_free_percent": (0, _percent),
        "on_low_disk": ("alert", _choice(ON_LOW_DISK)),
        "destination_days": (0, _number()),
    },
    "log": {
        "level": ("info", _choice(LOG_LEVELS)),
    },
}


def _section(
    name: str, raw: Mapping[str, Any], base: Path, table: str | None = None
) -> dict[str, Any]:
    """The keys of [table] (default: [name]) checked against SCHEMA[name]."""
    schema = SCHEMA[name]
    table = table or name
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(
            f"unknown key {table}.{unknown[0]} (known keys of [{table}]: {', '.join(schema)})"
        )
    values = {}
    for key, (default, check) in schema.items():
        value = raw.get(key, default)
        values[key] = None if value is None else check(f"{table}.{key}", value, base)
    return values


class NotForType(ConfigError):
    """A key of another type of its table; `load` adds the line to comment out."""

    def __init__(self, table: str, key: str, message: str) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


def _destination(
    raw: Mapping[str, Any], base: Path, site: str, name: str = DEFAULT_DESTINATION
) -> DestinationConfig:
    """One destination: the keys of [destination] (name "default") or [destination.NAME]."""
    t = "destination" if name == DEFAULT_DESTINATION else f"destination.{name}"
    values = _section("destination", raw, base, table=t)
    kind = values["type"]
    values["site"] = site if values["layout"] == "sites" else None
    refused = sorted(set(raw) - (DESTINATION_COMMON | DESTINATION_KEYS[kind]))
    if refused:
        raise NotForType(t, refused[0], f"{t}.{refused[0]} does not apply to {t}.type = {kind!r}")
    required = {"local": ("root",), "sftp": ("root", "host", "user"), "s3": ("bucket",)}[kind]
    for key in required:
        if values[key] is None:
            raise ConfigError(f"{t}.{key} is required for {t}.type = {kind!r}")
    if kind == "s3":
        if values["sse"] == "aws:kms" and values["kms_key_id"] is None:
            raise ConfigError(f"{t}.kms_key_id is required for {t}.sse = 'aws:kms'")
        if values["access_key_id"] is None and values["secret_access_key_file"] is not None:
            raise ConfigError(f"{t}.secret_access_key_file needs {t}.access_key_id")
        if values["access_key_id"] is not None and values["secret_access_key_file"] is None:
            raise ConfigError(f"{t}.access_key_id needs {t}.secret_access_key_file")
        values["root"] = Path(values["prefix"] or ".")  # the root inside the bucket
    elif kind == "sftp":
        values["root"] = Path(values["root"])  # a path on the server: not resolved here
        secret = values["password_file"] or values["key_passphrase_file"]
        if values["sftp_client"] == "openssh" and secret is not None:
            raise ConfigError(
                "destination.sftp_client = 'openssh' logs in with a key without a passphrase"
                " only: unset password_file and key_passphrase_file, or use 'auto'"
            )
    else:
        values["root"] = _path(f"{t}.root", values["root"], base)
    return DestinationConfig(**values, name=name)


def _destinations(raw: Any, base: Path, site: str) -> dict[str, DestinationConfig]:
    """[destination] (its own keys: "default") and its [destination.NAME] tables, in order."""
    if not isinstance(raw, dict):
        raise ConfigError(f"destination: expected a table, got {raw!r}")
    named = {key: value for key, value in raw.items() if isinstance(value, dict)}
    own = {key: value for key, value in raw.items() if not isinstance(value, dict)}
    for name in named:
        if name in SCHEMA["destination"]:
            raise ConfigError(
                f"destination.{name}: a key of [destination], not a table; a destination"
                f" needs another name"
            )
        if not DESTINATION_NAME.fullmatch(name):
            raise ConfigError(
                f"destination.{name}: a destination's name is 1 to 32 of a-z, 0-9, '-' and"
                f" '_', got {name!r}"
            )
    if DEFAULT_DESTINATION in named and own:
        raise ConfigError(
            "destination.default: set the default destination's keys in [destination]"
            " or in [destination.default], not in both"
        )
    tables = dict(named)
    if own or not named:  # no table at all: today's error, destination.root is required
        tables = {DEFAULT_DESTINATION: own, **named}
    destinations = {name: _destination(keys, base, site, name) for name, keys in tables.items()}
    roots: dict[tuple[str, ...], str] = {}
    for name, d in destinations.items():
        where = (d.type, d.endpoint, str(d.bucket), str(d.host), str(d.port), d.where)
        if where in roots:
            raise ConfigError(
                f"destination.{name}: the same place as destination.{roots[where]}"
                f" ({d.where}); one agent owns a root once"
            )
        roots[where] = name
    return destinations


def _retention(values: dict[str, Any], spool: Path) -> RetentionConfig:
    retention = RetentionConfig(**values)
    move_to = retention.move_to
    if move_to is not None and (move_to.is_relative_to(spool) or spool.is_relative_to(move_to)):
        # Inside the spool a moved file would be found and shipped again.
        raise ConfigError(f"retention.move_to {move_to} must be outside spool.path {spool}")
    if move_to is not None and not retention.deletes:
        raise ConfigError(
            "retention.move_to is set but no rule removes anything"
            " (set retention.spool_days, or min_free_percent with on_low_disk = 'prune')"
        )
    return retention


def _check_cdr_keys(raw: Mapping[str, Any], cdr_type: str) -> None:
    allowed = {"type", "wait_seconds", "asterisk_conf_dir"} | CDR_KEYS[cdr_type]
    refused = sorted(set(raw) - allowed)
    if refused:
        raise NotForType(
            "cdr",
            refused[0],
            f"cdr.{refused[0]} does not apply to cdr.type = {cdr_type!r}"
            f" (its keys: {', '.join(sorted(allowed))})",
        )


def from_dict(data: Mapping[str, Any], *, base: Path, source: Path | None = None) -> Config:
    """Validate a parsed TOML document; `base` anchors relative paths."""
    unknown = sorted(set(data) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"unknown table [{unknown[0]}] (known: {', '.join(SCHEMA)})")
    sections: dict[str, dict[str, Any]] = {}
    for name in SCHEMA:
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{name}: expected a table, got {raw!r}")
        if name != "destination":  # its tables are read in _destinations()
            sections[name] = _section(name, raw, base)
    _check_cdr_keys(data.get("cdr", {}), sections["cdr"]["type"])
    site = sections["agent"]["site"] or default_site()
    destinations = _destinations(data.get("destination", {}), base, site)
    destination = next(iter(destinations.values()))
    if sections["webhook"]["presign_seconds"] and destination.type != "s3":
        raise ConfigError(
            "webhook.presign_seconds: presigned links need destination.type = 's3'"
            f" (it is {destination.type!r}); set it to 0"
        )
    return Config(
        agent=AgentConfig(site=site),
        spool=SpoolConfig(**sections["spool"]),
        state=StateConfig(**sections["state"]),
        cdr=CdrConfig(**sections["cdr"]),
        naming=NamingConfig(**sections["naming"]),
        tags=TagsConfig(**sections["tags"]),
        transcode=TranscodeConfig(**sections["transcode"]),
        destination=destination,
        index=IndexConfig(**sections["index"]),
        webhook=WebhookConfig(**sections["webhook"]),
        metrics=MetricsConfig(**sections["metrics"]),
        alerts=AlertsConfig(**sections["alerts"]),
        retention=_retention(sections["retention"], sections["spool"]["path"]),
        log=LogConfig(**sections["log"]),
        destinations=destinations,
        source=source,
    )


def load(path: Path) -> Config:
    """Read and validate the config file at `path`."""
    try:
        with path.open("rb") as fh:
            raw = fh.read()
            mode = os.fstat(fh.fileno()).st_mode
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path} (see config.example.toml)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    refuse_exposed_secrets(path, mode, data)
    try:
        return from_dict(data, base=path.parent.resolve(), source=path)
    except NotForType as exc:
        line = line_of(text, exc.table, exc.key)
        place = f"{path}:{line}" if line else str(path)
        fix = f"; comment out line {line} or change the type" if line else ""
        raise ConfigError(f"{place}: {exc}{fix}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")


def line_of(text: str, table: str, key: str) -> int | None:
    """The line (from 1) that sets `key` in [table], for messages; None if not found."""
    current = ""
    assignment = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _TABLE.match(line):
            current = header.group(1)
        elif current == table and assignment.match(line):
            return number
    return None
