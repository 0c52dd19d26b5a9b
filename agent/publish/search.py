"""The search files: `search/YYYY-MM.json`, the calls of one month in a compact form the
search page (`search.html`) filters in the browser, and `search/months.json`, which months
exist, so a search fetches only those of the dates asked.

Pure rendering: manifest entries in, bytes out. A month file is rebuilt whole from the
state database when one of its days is published (the remote is never read back).

A month file, one day per line::

    {"v":1,"month":"2024-03","kinds":[["Incoming","in"],...],"days":[
    ["2024/03/15",[[seconds,caller,dst,name,extension,kind,disposition,talk,href,uniqueid,playable],...]],
    ...]}

`seconds` is the time of day (-1 unknown), `caller` and `dst` are digits only (what a number
search compares), `kind` an index into `kinds` (label, direction class), `talk` the seconds
the day page shows (-1 unknown), `href` the URL-encoded file name beside the day page,
`uniqueid` the row's id on it ("" when it has none), `playable` 1 when a browser plays it.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from urllib.parse import quote

from agent.publish.index import anchor, kind_label, playable, talk_seconds

FORMAT = 1
FIELDS = (
    "seconds", "caller", "dst", "name", "extension", "kind", "disposition", "talk", "href",
    "uniqueid", "playable",
)  # fmt: skip

_NOT_DIGIT = re.compile(r"[^0-9]")
_DAY = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9]{2}")


def month_of(day: str) -> str:
    """`2024/03/15` -> `2024-03`."""
    if not _DAY.fullmatch(day):
        raise ValueError(f"not a YYYY/MM/DD day: {day!r}")
    return day[:7].replace("/", "-")


def path_of(month: str) -> str:
    """The month file's path under the root: `search/2024-03.json`."""
    return f"search/{month}.json"


def month_range(month: str) -> tuple[str, str]:
    """The remote_path range of a month's files: [`2024/03/`, `2024/030`)."""
    prefix = month.replace("-", "/")
    return f"{prefix}/", f"{prefix}0"


def render_month(month: str, entries: Iterable[tuple[Mapping[str, object], str | None]]) -> bytes:
    """The month file from its manifest entries, each with its extension (which the
    manifest does not carry), in day order as the state db gives them. `entries` is read
    once: a busy month need not be in memory as objects."""
    kinds: dict[tuple[str, str], int] = {}
    days = io.StringIO()
    day, separator = None, ""
    for entry, extension in entries:
        file = str(entry.get("file") or "")
        this = file.rsplit("/", 1)[0]
        if this != day:
            if day is not None:
                days.write("]]")
            days.write(f"{separator}\n[{json.dumps(this)},[")
            day, separator, row_separator = this, ",", ""
        label = kind_label(entry.get("kind"))
        kind = kinds.setdefault(label, len(kinds))
        days.write(row_separator)
        days.write(
            json.dumps(
                _row(entry, extension, file, kind), ensure_ascii=False, separators=(",", ":")
            )
        )
        row_separator = ","
    if day is not None:
        days.write("]]")
    head = json.dumps(
        {"v": FORMAT, "month": month, "kinds": [list(k) for k in kinds]},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    # A lone surrogate (a name that was not UTF-8) cannot be UTF-8: shown as "?".
    return f'{head[:-1]},"days":[{days.getvalue()}\n]}}\n'.encode("utf-8", "replace")


def render_months(counts: Sequence[tuple[str, int]]) -> bytes:
    """`search/months.json` from the published days ("2024/03/15", count): each month
    with its calls and its first and last day, newest first."""
    months: dict[str, list[object]] = {}
    for day, count in sorted(counts):
        month = months.setdefault(month_of(day), [0, day, day])
        month[0] = int(month[0]) + count  # type: ignore[call-overload]
        month[2] = day
    listed = [
        {"month": m, "count": v[0], "first": v[1], "last": v[2]}
        for m, v in sorted(months.items(), reverse=True)
    ]
    return (json.dumps({"v": FORMAT, "months": listed}, separators=(",", ":")) + "\n").encode()


def _row(entry: Mapping[str, object], extension: str | None, file: str, kind: int) -> list[object]:
    name = file.rsplit("/", 1)[-1]
    talk = talk_seconds(entry)
    return [
        _seconds_of_day(entry.get("started_at")),
        _digits(entry.get("caller_number")),
        _digits(entry.get("dst")),
        _text(entry.get("caller_name")),
        _text(extension),
        kind,
        _text(entry.get("disposition")),
        -1 if talk is None else talk,
        # surrogateescape: a name that is not UTF-8 links to its own bytes, as on the page
        quote(name, safe="", errors="surrogateescape"),
        anchor(entry.get("uniqueid")) or "",
        1 if playable(name.rsplit(".", 1)[-1] if "." in name else "") else 0,
    ]


def _digits(value: object) -> str:
    return "" if value is None else _NOT_DIGIT.sub("", str(value))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _seconds_of_day(started_at: object) -> int:
    """The PBX's wall-clock time of day, in seconds; -1 when unknown."""
    if not isinstance(started_at, str) or not started_at:
        return -1
    try:
        when = datetime.fromisoformat(started_at)
    except ValueError:
        return -1
    return when.hour * 3600 + when.minute * 60 + when.second
