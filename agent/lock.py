"""One agent process per state database: `run` and `backfill` hold an exclusive lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.errors import AgentError
from agent.secrets import give_to_folder_owner


class AlreadyRunning(AgentError):
    """Another recsync process is using this state database."""


@contextmanager
def exclusive(state_path: Path) -> Iterator[None]:
    """Hold `<state>.lock` for the duration; AlreadyRunning if another process holds it."""
    path = state_path.with_name(state_path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    give_to_folder_owner(path)  # root running `backfill` must not lock the service user out
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another recsync process is running on {state_path} (it holds {path})"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
