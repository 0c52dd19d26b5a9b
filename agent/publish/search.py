"""The search files the search page (`search.html`) filters in the browser: one per day,
`search/YYYY/MM/DD.json`, the calls of that day in a compact form, and
`search/months.json`, which months and days exist (with their counts), so a search
fetches only the days of the dates asked, newest first.

Pure rendering: manifest entries in, bytes out. A day's file is written with its manifest
and page, from the same pass over its rows, so publishing a new call costs its day's file
and the small listing, not its month's (the remote is never read back).

A day file::

    {"v":2,"day":"2024/03/15","rows":[
    [seconds,caller,dst,name,extension,kind,disposition,talk,href,uid,playable],...]}

(the rows one after another on one line, a batch made by one encoder call; FIELDS names
their columns). `seconds` is the time of day (-1
unknown); `caller` and `dst` are digits only (what a number search compares); `kind` the
recording's kind (the listing's `kinds` gives its label and direction class: in, out or
int; a kind not there is "int"); `talk` the seconds the day page shows (-1 unknown: from
the CDR, else the audio); `href` the URL-encoded file name beside the day page; `uid` the
row's id there ("" when it has none); `playable` 1 when a browser plays the format.

The listing: `{"v":2,"site":…,"kinds":{…},"months":[{"month","first","last",
"days":[day,…]},…]}`, newest first; rewritten only when it changes. `site` is the PBX
whose calls these are (`agent.site` with `destination.layout = "sites"`, else null):
every row of a site's files is that site's, so the site is said once, not per row.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import quote

from agent.publish.index import anchor, kind_table, playable, talk_seconds

FORMAT = 2
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


def path_of(day: str) -> str:
    """A day's search file under the root: `2024/03/15` -> `search/2024/03/15.json`."""
    if not _DAY.fullmatch(day):
        raise ValueError(f"not a YYYY/MM/DD day: {day!r}")
    return f"search/{day}.json"


def old_month_path(month: str) -> str:
    """Where the first format kept a month's calls (`search/2024-03.json`): removed when
    the day files replace it."""
    return f"search/{month}.json"


# What `_row` reads of an entry: a row is made again only when one of them changed.
_KEY_FIELDS = (
    "file", "started_at", "caller_number", "dst", "caller_name", "kind", "disposition",
    "billsec", "duration", "audio_seconds", "uniqueid",
)  # fmt: skip
_KEPT_DAYS = 2  # the days whose rows are kept made: today's and yesterday's, in practice
_made: dict[str, dict[int, str]] = {}  # day -> (hash of a row's inputs -> its JSON)


class DayPart:
    """One day's search file, made as the day's entries pass (each with its extension,
    which the manifest does not carry) while its manifest is written.

    The rows made for the last days written are kept (as their JSON, keyed by a hash of
    what they are made of), so a busy day published again for each new call encodes the
    new and changed calls only: the day's file then costs little more than its bytes."""

    def __init__(self, day: str) -> None:
        self.day = day
        self._rows = io.StringIO()
        self._batch: list[str] = []
        self._before = _made.get(day, {})
        self._now: dict[int, str] = {}

    def add(self, entry: Mapping[str, object], extension: str | None) -> None:
        try:
            key: int | None = hash((extension, *(entry.get(name) for name in _KEY_FIELDS)))
        except TypeError:  # not a manifest entry's scalars: made, not kept
            key = None
        text = None if key is None else self._before.get(key)
        if text is None:
            text = _dumps(_row(entry, extension, str(entry.get("file") or "")))
        if key is not None:
            self._now[key] = text
        self._batch.append(text)
        if len(self._batch) >= _BATCH:
            self._flush()

    def data(self) -> bytes:
        """The day's file as UTF-8 (a lone surrogate, a name that was not UTF-8, as "?")."""
        self._flush()
        _made.pop(self.day, None)
        _made[self.day] = self._now
        while len(_made) > _KEPT_DAYS:
            del _made[next(iter(_made))]  # the day written longest ago
        head = f'{{"v":{FORMAT},"day":{json.dumps(self.day)},"rows":[\n'
        return (head + self._rows.getvalue() + "\n]}\n").encode("utf-8", "replace")

    def _flush(self) -> None:
        if self._batch:
            if self._rows.tell():
                self._rows.write(",")
            self._rows.write(",".join(self._batch))
            self._batch = []


def render_months(days: Iterable[str], *, site: str | None = None) -> bytes:
    """`search/months.json` from the published days ("2024/03/15"): each month with its
    first and last day and its days, newest first. No counts: it changes only when a day
    appears or goes, so a publish that adds a call to a day need not rewrite it."""
    months: dict[str, list[str]] = {}
    for day in sorted(days, reverse=True):
        months.setdefault(month_of(day), []).append(day)
    listed = [
        {"month": m, "first": listed[-1], "last": listed[0], "days": listed}
        for m, listed in months.items()
    ]
    document = {"v": FORMAT, "site": site, "kinds": kind_table(), "months": listed}
    return (_dumps(document) + "\n").encode("utf-8", "replace")


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
