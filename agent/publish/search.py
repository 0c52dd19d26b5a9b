"""The search files: `search/YYYY-MM.json`, the calls of one month in a compact form the
search page (`search.html`) filters in the browser, and `search/months.json`, which months
exist, so a search fetches only those of the dates asked.

Pure rendering: manifest entries in, bytes out. A month file is rewritten whole when one
of its days is published, from each day's part as the state database keeps it (the
remote is never read back).

A month file, one day a line, newest day first (a day's calls in its page's order)::

    {"v":1,"month":"2024-03","kinds":{"in":["Incoming","in"],...},"days":[
    ["2024/03/15",[[seconds,caller,dst,name,extension,kind,disposition,talk,href,uid,
    playable],...]],
    ...]}

(a row is on one line; FIELDS names its columns). `seconds` is the time of day (-1
unknown); `caller` and `dst` are digits only (what a number search compares); `kind` the
recording's kind (`kinds` gives its label and direction class: in, out or int; a kind not
there is "int"); `talk` the seconds the day page shows (-1 unknown); `href` the URL-encoded
file name beside the day page; `uid` the row's id there ("" when it has none); `playable`
1 when a browser plays the format.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from urllib.parse import quote

from agent.publish.index import anchor, kind_table, playable, talk_seconds

FORMAT = 1
FIELDS = (
    "seconds", "caller", "dst", "name", "extension", "kind", "disposition", "talk", "href",
    "uniqueid", "playable",
)  # fmt: skip

_NOT_DIGIT = re.compile(r"[^0-9]")
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]*")  # what quote() leaves as it is
_CLOCK = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T([0-9]{2}):([0-9]{2}):([0-9]{2})")
_BATCH = 256
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


class DayPart:
    """One day's line of its month file, made as the day's entries pass (each with its
    extension, which the manifest does not carry), kept in the state database with the
    day so a month file is put together without reading the month's recordings."""

    def __init__(self, day: str) -> None:
        self.day = day
        self._rows = io.StringIO()
        self._batch: list[list[object]] = []

    def add(self, entry: Mapping[str, object], extension: str | None) -> None:
        self._batch.append(_row(entry, extension, str(entry.get("file") or "")))
        if len(self._batch) >= _BATCH:
            self._flush()

    def data(self) -> bytes:
        """The day's line as UTF-8 (a lone surrogate, a name that was not UTF-8, as "?"):
        stored so, a month file is its days' bytes joined, nothing decoded again."""
        self._flush()
        text = f"[{json.dumps(self.day)},[{self._rows.getvalue()}]]"
        return text.encode("utf-8", "replace")

    def _flush(self) -> None:
        # One encoder call a batch rather than a row: a third of the cost on a busy day,
        # and a batch, not the day, is ever in memory as objects.
        if self._batch:
            if self._rows.tell():
                self._rows.write(",")
            self._rows.write(_dumps(self._batch)[1:-1])
            self._batch = []


def render_month(month: str, parts: Iterable[bytes]) -> bytes:
    """The month file from its days' parts (`DayPart.text`), newest day first: the page
    reads it a line at a time as it arrives, and shows results newest first."""
    head = json.dumps(
        {"v": FORMAT, "month": month, "kinds": kind_table()},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return b"".join([f'{head[:-1]},"days":[\n'.encode(), b",\n".join(parts), b"\n]}\n"])


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


def _row(entry: Mapping[str, object], extension: str | None, file: str) -> list[object]:
    name = file.rsplit("/", 1)[-1]
    talk = talk_seconds(entry)
    return [
        _seconds_of_day(entry.get("started_at")),
        _digits(entry.get("caller_number")),
        _digits(entry.get("dst")),
        _text(entry.get("caller_name")),
        _text(extension),
        _text(entry.get("kind")),
        _text(entry.get("disposition")),
        -1 if talk is None else talk,
        # surrogateescape: a name that is not UTF-8 links to its own bytes, as on the page
        name if _URL_SAFE.fullmatch(name) else quote(name, safe="", errors="surrogateescape"),
        anchor(entry.get("uniqueid")) or "",
        1 if playable(name.rsplit(".", 1)[-1] if "." in name else "") else 0,
    ]


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _digits(value: object) -> str:
    return "" if value is None else _NOT_DIGIT.sub("", str(value))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _seconds_of_day(started_at: object) -> int:
    """The PBX's wall-clock time of day, in seconds; -1 when unknown."""
    if not isinstance(started_at, str) or not started_at:
        return -1
    if clock := _CLOCK.match(started_at):  # as the agent writes it: no need to parse
        hours, minutes, seconds = (int(part) for part in clock.groups())
        return hours * 3600 + minutes * 60 + seconds
    try:
        when = datetime.fromisoformat(started_at)
    except ValueError:
        return -1
    return when.hour * 3600 + when.minute * 60 + when.second
