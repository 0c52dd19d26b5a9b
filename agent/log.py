"""One line per event, key=value pairs, to stderr (journald adds the time)."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_PLAIN = re.compile(r"^[\w./:+@,-]+$")


def _value(value: object) -> str:
    text = str(value)
    # Quote anything that could split a line or a field; json.dumps escapes control characters.
    return text if _PLAIN.match(text) else json.dumps(text, ensure_ascii=False)


def kv(event: str, **fields: object) -> str:
    """`event=shipped path=2024/03/15/x.wav reason="disk full"`; None values are left out."""
    parts = [f"event={event}"]
    parts += [f"{key}={_value(val)}" for key, val in fields.items() if val is not None]
    return " ".join(parts)


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("level=%(levelname)s %(message)s"))
    root = logging.getLogger("agent")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


@contextmanager
def held() -> Iterator[list[logging.LogRecord]]:
    """Collect the agent's log records instead of writing them (a command that reports
    the same facts in its own words, like `doctor`)."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger("agent")
    saved = root.handlers[:]
    root.handlers[:] = [_Keep()]
    try:
        yield records
    finally:
        root.handlers[:] = saved
