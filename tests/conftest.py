from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import config as config_module
from agent.config import Config
from agent.daemon import Agent
from agent.store.state import Store
from agent.transport.local import LocalTransport

pytest_plugins = [
    "tests.support.mariadb",
    "tests.support.sshd",
    "tests.support.crm",
    "tests.support.disks",
    "tests.support.s3",
    "tests.support.metadata",
    "tests.support.moto",
    "tests.support.chromium",
]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test that leaves a thread running (a watcher not stopped) fails."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in leaked:
        thread.join(timeout=5)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@dataclass
class Site:
    """A spool, a destination and a state folder under one temp dir, plus its config file."""

    root: Path
    spool: Path
    dest: Path
    state: Path
    config_path: Path

    def data(self, **overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = {
            "spool": {"path": str(self.spool)},
            "state": {"path": str(self.state / "state.db"), "staging": str(self.state / "staging")},
            "destination": {"type": "local", "root": str(self.dest)},
            "cdr": {"type": "none"},  # never find this machine's own FreePBX, if any
            # Byte-identical copies and only recordings and manifests at the destination
            # keep the shipping tests simple; the tag and page tests turn these on.
            "tags": {"enabled": False},
            "index": {"enabled": False},
            "metrics": {"listen": ""},  # no fixed port shared between tests
        }
        for table, values in overrides.items():
            if table == "destination" and values.get("type", "local") != "local":
                data[table] = {}  # another type's keys replace the local folder's
            data.setdefault(table, {}).update(values)
        return data

    def config(self, **overrides: dict[str, Any]) -> Config:
        return config_module.from_dict(self.data(**overrides), base=self.root)

    def write_config(self, **overrides: dict[str, Any]) -> Path:
        """Write the config as TOML (tests of the CLI and the daemon read it from disk)."""
        lines = []
        for table, values in self.data(**overrides).items():
            lines.append(f"[{table}]")
            lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def spool_file(self, rel: str) -> Path:
        path = self.spool / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def remote(self, rel: str) -> Path:
        """Where the recording at spool path `rel` went (or would go), from the state db;
        a path that does not exist when it was not named yet."""
        db = self.state / "state.db"
        if not db.exists():
            return self.dest / "not-shipped-yet"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT remote_path FROM recordings WHERE path = ?", (rel,)
            ).fetchone()
        finally:
            conn.close()
        return self.dest / (found[0] if found and found[0] else "not-shipped-yet")

    def shipped(self) -> list[str]:
        """Relative paths of the files at the destination (manifests and temporaries too),
        but for the agent's status.json."""
        return sorted(
            p.relative_to(self.dest).as_posix()
            for p in self.dest.rglob("*")
            if p.is_file() and p.name != "status.json"
        )


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(
        root=tmp_path,
        spool=tmp_path / "spool",
        dest=tmp_path / "dest",
        state=tmp_path / "state",
        config_path=tmp_path / "config.toml",
    )
    for folder in (s.spool, s.dest, s.state):
        folder.mkdir()
    return s


@pytest.fixture
def make_agent(site: Site) -> Iterator[Any]:
    """Build Agents over the site (no watcher: tests drive run_once); closed at the end."""
    made: list[tuple[Agent, Store]] = []

    def build(
        config: Config | None = None, transport: Any = None, cdr: Any = None, webhook: Any = None
    ) -> Agent:
        config = config or site.config()
        store = Store.open(config.state.path)
        agent = Agent(
            config=config,
            store=store,
            transport=transport or LocalTransport(root=config.destination.root),
            cdr=cdr,
            webhook=webhook,
            watch=False,
        )
        made.append((agent, store))
        return agent

    yield build
    for agent, store in made:
        agent.close()
        store.close()


def age(path: Path, seconds: float) -> None:
    """Pretend `path` was last written `seconds` ago."""
    st = path.stat()
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))
