"""`recsync doctor`: walk every dependency and say for each what is wrong and what to do."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from agent.cdr import open_source
from agent.config import Config
from agent.errors import AgentError
from agent.transport import open_transport


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    advice: list[str] = field(default_factory=list)


def check_spool(config: Config) -> Check:
    path = config.spool.path
    if not path.is_dir():
        return Check(
            "spool",
            False,
            f"{path} is not a folder (spool.path; FreePBX's"
            " 'Override Call Recording Location' may have moved it)",
        )
    if not os.access(path, os.R_OK | os.X_OK):
        return Check("spool", False, f"{path} is not readable by this user (uid {os.getuid()})")
    return Check("spool", True, f"{path} readable")


def check_state(config: Config) -> Check:
    path = config.state.path
    if not path.exists():
        folder = path.parent
        while not folder.exists():
            folder = folder.parent
        if os.access(folder, os.W_OK):
            return Check("state", True, f"{path} will be created at the first run")
        return Check("state", False, f"{path} does not exist and {folder} is not writable")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()
            count = conn.execute("SELECT count(*) FROM recordings").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return Check("state", False, f"{path}: {exc}")
    if result[0] != "ok":
        return Check("state", False, f"{path} is damaged: {result[0]}")
    return Check("state", True, f"{path} ({count} recordings)")


def check_cdr(config: Config) -> Check:
    try:
        source = open_source(config.cdr)
    except AgentError as exc:
        return Check("cdr", False, str(exc))
    if source is None:
        why = (
            "caller ID off"
            if config.cdr.type == "none"
            else (
                f"no FreePBX configuration at {config.cdr.freepbx_conf} or"
                f" {config.cdr.amportal_conf}: caller ID off (set cdr.type to choose a source)"
            )
        )
        return Check("cdr", True, f"{config.cdr.type}: {why}")
    try:
        return Check("cdr", True, source.check(), source.advice())
    except AgentError as exc:
        return Check("cdr", False, str(exc))
    finally:
        source.close()


def check_destination(config: Config) -> Check:
    transport = open_transport(config.destination)
    try:
        transport.probe()
    except AgentError as exc:
        return Check("destination", False, str(exc))
    finally:
        transport.close()
    return Check(
        "destination", True, f"{config.destination.type} {config.destination.root} writable"
    )


CHECKS: tuple[Callable[[Config], Check], ...] = (
    check_spool,
    check_state,
    check_cdr,
    check_destination,
)


def run_checks(config: Config) -> Iterator[Check]:
    for check in CHECKS:
        yield check(config)
