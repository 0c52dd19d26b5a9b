"""Crash points for the crash-safety tests: RECSYNC_CRASH_AT=name[@n] SIGKILLs the agent
the n-th time (default 1st) it passes the named point. Unset in production: one dict lookup."""

from __future__ import annotations

import os
import signal

_target, _, _nth = os.environ.get("RECSYNC_CRASH_AT", "").partition("@")
_remaining = int(_nth or 1)


def crash_point(name: str) -> None:
    global _remaining
    if name != _target:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
