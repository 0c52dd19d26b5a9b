"""One line per event, key=value pairs, to stderr (journald adds the time)."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
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


_where = threading.local()  # the destination whose agent runs on this thread, if named


@contextmanager
def destination(name: str) -> Iterator[None]:
    """Lines logged on this thread meanwhile say `destination=NAME` (several destinations:
    each agent's loop runs on its own thread)."""
    _where.destination = name
    try:
        yield
    finally:
        _where.destination = None


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"level={record.levelname} {record.getMessage()}"
        name = getattr(_where, "destination", None)
        if name is not None:
            line = f"level={record.levelname} destination={name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
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
