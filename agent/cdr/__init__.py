"""Caller ID from the CDR: the CdrSource protocol, the query, and the registry of stores."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from agent.cdr.freepbx import batch_seconds, find_database
from agent.config import CdrConfig
from agent.log import kv
from agent.model import CallInfo, Recording
from agent.secrets import read_secret

log = logging.getLogger(__name__)

DEFAULT_WAIT_SECONDS = 120.0
CSV_INDEX = "cdr-csv.db"  # Master.csv's rows, indexed, in the state folder


@dataclass(frozen=True, kw_only=True)
class CdrQuery:
    """What the agent knows about a recording when it asks the CDR for its call."""

    recordingfiles: tuple[str, ...]  # basenames the CDR's `recordingfile` may hold
    uniqueid: str | None
    started_at: datetime  # aware; the CDR's calldate is the PBX's local wall time
    src: str | None
    dst: str | None

    @classmethod
    def for_recording(cls, basename: str, recording: Recording) -> CdrQuery:
        return cls(
            recordingfiles=recordingfile_variants(basename, recording.pattern),
            uniqueid=recording.uniqueid,
            started_at=recording.started_at,
            src=recording.src,
            dst=recording.dst,
        )

    @property
    def local_start(self) -> datetime:
        """started_at as the naive local time a CDR stores."""
        return self.started_at.replace(tzinfo=None)


_AST13_SUFFIX = re.compile(r"^(?P<stem>.*)-[0-9]+(?P<ext>\.[^.]+)$")


def recordingfile_variants(basename: str, pattern: str) -> tuple[str, ...]:
    """The names FreePBX may have written to `recordingfile` for this file: on-demand
    recordings say `.wav49` where the disk has `.WAV`; ConfBridge on Asterisk 13 appends
    `-{epoch}` on disk but not in the CDR."""
    names = [basename]
    if pattern == "conference-ast13" and (m := _AST13_SUFFIX.match(basename)):
        names.append(m["stem"] + m["ext"])
    for name in list(names):
        if name.endswith(".WAV"):
            names.append(name[: -len(".WAV")] + ".wav49")
    return tuple(names)


class CdrSource(Protocol):
    """A store of call detail records, read-only.

    `lookup` returns the call's CallInfo, or None when the CDR has no row for it (yet: a
    row may be written minutes after the recording closes; the caller asks again).
    It raises TransientError when the store cannot be asked now (connection lost, file
    unreadable): the caller treats that as "not yet" and retries. `check` raises an
    AgentError saying what is wrong (missing table, bad credentials) and otherwise
    returns a one-line description of the source, for `doctor` and `status`.
    """

    name: str

    def lookup(self, query: CdrQuery) -> CallInfo | None: ...

    def check(self) -> str: ...

    def advice(self) -> list[str]:
        """Lines of advice for `doctor` (e.g. use a read-only database user), or []."""

    def close(self) -> None: ...


def wait_seconds(config: CdrConfig) -> float:
    """How long a recording waits for a late CDR row: as configured, else 120 s, or the
    batch interval plus a minute when Asterisk's CDR batch mode is on."""
    if config.wait_seconds is not None:
        return config.wait_seconds
    batch = batch_seconds(config.asterisk_conf_dir) if config.type != "none" else None
    return DEFAULT_WAIT_SECONDS if batch is None else max(DEFAULT_WAIT_SECONDS, batch + 60)


def open_source(config: CdrConfig, *, state_folder: Path | None = None) -> CdrSource | None:
    """The configured CDR store; None for `none`, or for `auto` finding no FreePBX.
    Each store's module (PyMySQL for MariaDB) is imported only when it is the one used.
    `state_folder` holds what a store keeps of its own (the CSV store's index)."""
    if config.type == "none":
        return None
    if config.type == "sqlite":
        from agent.cdr.sqlite import SqliteCdr

        return SqliteCdr(
            path=config.path or Path("/var/log/asterisk/master.db"), table=config.table
        )
    if config.type == "csv":
        from agent.cdr.csvfile import CsvCdr

        return CsvCdr(
            path=config.path or Path("/var/log/asterisk/cdr-csv/Master.csv"),
            columns=config.columns,
            index=None if state_folder is None else state_folder / CSV_INDEX,
        )
    if config.type == "mysql":
        from agent.cdr.mysql import MysqlCdr

        password = read_secret(config.password_file) if config.password_file else None
        return MysqlCdr(
            host=config.host,
            port=config.port,
            socket=str(config.socket) if config.socket else None,
            user=config.user,
            password=password,
            database=config.database,
            table=config.table,
        )
    found = find_database(config.freepbx_conf, config.amportal_conf)
    if found is None:
        log.warning(
            kv(
                "cdr-auto",
                result="no FreePBX configuration found; caller ID off",
                looked_in=f"{config.freepbx_conf} {config.amportal_conf}",
            )
        )
        return None
    log.info(kv("cdr-auto", source=found.source, user=found.user, host=found.host))
    from agent.cdr.mysql import MysqlCdr

    return MysqlCdr(
        host=found.host,
        port=found.port,
        socket=found.socket,
        user=found.user,
        password=found.password,
        database=config.database,
        table=config.table,
    )


# Asterisk does not escape quotes inside the name: the name runs to the last quote.
_QUOTED_CLID = re.compile(r'^\s*"(?P<name>.*)"\s*<(?P<number>[^>]*)>\s*$', re.S)
_BARE_CLID = re.compile(r"^\s*(?P<name>[^<]*?)\s*<(?P<number>[^>]*)>\s*$")


def split_clid(clid: str | None) -> tuple[str | None, str | None]:
    """`"Bob Buyer" <2125550100>` -> ("Bob Buyer", "2125550100"); text kept verbatim."""
    if not clid:
        return None, None
    match = _QUOTED_CLID.match(clid) or _BARE_CLID.match(clid)
    if match is None:
        return None, clid.strip() or None
    return match["name"] or None, match["number"] or None
