"""`recsync run` as a real process for tests, and polling with a deadline."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEADLINE = 15.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll with a deadline: the awaited thing usually happens in milliseconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def recsync(config: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """One CLI command, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        **({"timeout": 60} | kwargs),
    )


class Daemon:
    """`recsync run` with its log in a file; started and ready on construction."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "--config", str(config), "run"],
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        wait_for(lambda: "event=started" in self.text(), "the agent to start")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
