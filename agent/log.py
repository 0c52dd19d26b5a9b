"""One line per event, key=value pairs, to stderr (journald adds the time)."""

from __future__ import annotations

import json
import logging
import re
import sys

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
