"""The browsable pages of the destination: the root `index.html` (the days, newest first)
and `YYYY/MM/DD/index.html` (the calls of one day), plus the CSS and JS they share.

Pure rendering: manifest entries in, bytes out. Nothing here writes, lists the remote or
reads the state database; the only I/O is reading this package's templates and static
files. The pages are static files for Apache or nginx: every link is relative and
URL-encoded, everything from the CDR is escaped (Jinja2 autoescape), and a strict
Content-Security-Policy allows only the pages' own CSS, JS and recordings.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:  # Jinja2 loads with the first page rendered
    import jinja2

CSP = (  # connect-src: the search page fetches the month files beside it
    "default-src 'none'; style-src 'self'; script-src 'self'; media-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'"
)

_PACKAGE = "agent.publish"
_STATIC_NAMES = ("recsync.css", "recsync.js", "search.js", "player.js", "favicon.svg")


def _read_static() -> dict[str, bytes]:
    folder = resources.files(_PACKAGE) / "static"
    return {f"static/{name}": (folder / name).read_bytes() for name in _STATIC_NAMES}


STATIC: dict[str, bytes] = _read_static()
"""The pages' assets: remote path relative to the root -> content."""

# Formats a browser plays. Asterisk's "wav" (PCM) and "wav49" (GSM in RIFF) both end in
# .wav; Asterisk names wav49 files ".WAV", so the case of the extension tells them apart.
_PLAYABLE = frozenset({"wav", "mp3", "ogg", "oga", "opus", "flac"})

_DAY = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9]{2}")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
)  # fmt: skip

# kind (DESIGN.md "Parsed recording") -> (label, CSS class for the direction)
_KINDS: dict[str, tuple[str, str]] = {
    "in": ("Incoming", "in"),
    "out": ("Outgoing", "out"),
    "internal": ("Internal", "int"),
    "external": ("External", "out"),
    "q": ("Queue", "in"),
    "rg": ("Ring group", "in"),
    "generic": ("Call", "int"),
    "parked": ("Parked", "int"),
    "ondemand": ("On demand", "int"),
    "exten": ("Extension", "int"),
    "force": ("Forced", "int"),
    "conf": ("Conference", "int"),
    "auto": ("Automatic", "int"),
    "legacy-out": ("Outgoing", "out"),
    "legacy-in": ("Incoming", "in"),
    "legacy-group": ("Ring group", "in"),
    "legacy-queue": ("Queue", "in"),
    "disa": ("DISA", "out"),
    "custom": ("Custom", "int"),
}
# CDR disposition -> CSS class
_DISPOSITIONS = {
    "ANSWERED": "answered",
    "NO ANSWER": "missed",
    "BUSY": "missed",
    "CONGESTION": "failed",
    "FAILED": "failed",
}


_ANCHOR = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def anchor(uniqueid: object) -> str | None:
    """The day page row's id for a call: its uniqueid as is, when it is a plain token
    (Asterisk's are "1710497702.42"), so `index.html#<uniqueid>` is the link a CRM builds
    from what it already has; None for anything else (no id, nothing to escape)."""
    if isinstance(uniqueid, str) and _ANCHOR.fullmatch(uniqueid):
        return uniqueid
    return None


def link(day: str, uniqueid: object) -> str:
    """The stable link to a call, relative to the root: `2024/03/15/index.html#<uid>`
    (the day page alone when the uniqueid cannot be an id)."""
    target = anchor(uniqueid)
    return f"{day}/index.html#{target}" if target else f"{day}/index.html"


def kind_label(kind: object) -> tuple[str, str]:
    """A DESIGN.md kind -> (label, direction class: in, out or int)."""
    text = _text(kind)
    return _KINDS.get(text, (text or "Unknown", "int"))


def kind_table() -> dict[str, tuple[str, str]]:
    """Every known kind -> (label, direction class), for the search page."""
    return dict(_KINDS)


def playable(fmt: str) -> bool:
    """True for formats a browser plays: PCM wav, mp3, ogg, opus, flac.

    `fmt` is the file's extension as written: "wav" is PCM, while "WAV" (Asterisk's name
    for wav49, GSM in RIFF) is not playable, nor are gsm, ulaw, alaw, sln or g729.
    """
    if fmt.lower() == "wav":
        return fmt == "wav"
    return fmt.lower() in _PLAYABLE


@dataclass(slots=True)
class DayTotals:
    """What a day page's heading says: how many calls, how long in all."""

    count: int = 0
    seconds: int = 0

    def add(self, entry: Mapping[str, object]) -> None:
        self.count += 1
        self.seconds += talk_seconds(entry) or 0


def render_day(
    day: str,
    entries: Iterable[Mapping[str, object]],
    *,
    title: str,
    generated_at: str,
    totals: DayTotals | None = None,
) -> bytes:
    """The page at `YYYY/MM/DD/index.html`: one row per manifest entry, in the given order.

    `day` is "2024/03/15"; each entry's `file` is root-relative ("2024/03/15/name.wav"),
    and is linked by its URL-encoded base name (the page sits beside the recordings).
    Given the day's `totals`, `entries` is read once, as the page is written: a busy day
    need not be in memory as objects.
    """
    when = parse_day(day)
    if totals is None:
        entries = list(entries)
        totals = DayTotals()
        for entry in entries:
            totals.add(entry)
    summary = plural(totals.count, "recording")
    if totals.seconds:
        summary += f", {_hours(totals.seconds)} in all"
    return render(
        _templates()[0],
        title=title,
        generated_at=generated_at,
        home="../../../index.html",
        static="../../../static/",
        heading=f"{_WEEKDAYS[when.weekday()]} {when.day} {_MONTHS[when.month - 1]} {when.year}",
        summary=summary,
        any_rows=totals.count > 0,
        rows=(_row(entry) for entry in entries),
    )


def render_root(days: Sequence[tuple[str, int]], *, title: str, generated_at: str) -> bytes:
    """The root `index.html`: every day ("2024/03/15", count), newest first, grouped by
    month, each linking to its `YYYY/MM/DD/index.html`."""
    months: list[_Month] = []
    for day, count in sorted(days, reverse=True):
        when = parse_day(day)
        label = f"{_MONTHS[when.month - 1]} {when.year}"
        if not months or months[-1].label != label:
            months.append(_Month(label))
        month = months[-1]
        month.total += count
        month.days.append(
            _DayLink(
                href=f"{day}/index.html",  # digits and slashes only: nothing to encode
                label=f"{_WEEKDAYS[when.weekday()][:3]} {when.day}",
                count=plural(count, "call"),
            )
        )
    total = sum(count for _, count in days)
    summary = f"{plural(total, 'recording')} on {plural(len(days), 'day')}"
    return render(
        _templates()[1],
        title=title,
        generated_at=generated_at,
        home="index.html",
        static="static/",
        summary=summary,
        months=months,
    )


def render_search(*, title: str, sites: Sequence[tuple[str, str]] = ()) -> bytes:
    """The root `search.html`: a form, and the results its script (static/search.js)
    finds in the day files under `search/` (agent/publish/search.py). The same page for
    the same title: written with the static files, not at every publish. With `sites`
    ((folder, name), a shared root's), it searches each site's files under its folder and
    can be narrowed to one."""
    return render(
        _templates()[2],
        title=title,
        generated_at="",
        home="index.html",
        static="static/",
        sites=list(sites),
    )


@dataclass(frozen=True, slots=True)
class _Row:
    """One call as the day page shows it: display strings, no markup (autoescaped)."""

    id: str | None  # the uniqueid, the target of `index.html#<uniqueid>`
    started_at: str
    time: str
    kind: str
    kind_class: str
    caller_name: str
    caller_number: str
    dst: str
    did: str
    duration: str
    duration_title: str
    disposition: str
    disposition_class: str
    href: str
    playable: bool
    format: str
    size: str


@dataclass(slots=True)
class _DayLink:
    href: str
    label: str
    count: str


@dataclass(slots=True)
class _Month:
    label: str
    total: int = 0
    days: list[_DayLink] = field(default_factory=list)

    @property
    def count(self) -> str:
        return plural(self.total, "call")


def _templates() -> tuple[jinja2.Template, jinja2.Template, jinja2.Template]:
    """The day, root and search templates."""
    return template("day.html"), template("root.html"), template("search.html")


@cache
def template(name: str) -> jinja2.Template:
    """A page template of this package, compiled once per process; autoescaped, with the
    Content-Security-Policy every page carries."""
    return _environment().get_template(name)


@cache
def _environment() -> jinja2.Environment:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.PackageLoader(_PACKAGE, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["csp"] = Markup(CSP)  # noqa: S704 (our constant: its quotes stay readable)
    return env


def _row(entry: Mapping[str, object]) -> _Row:
    file = _text(entry.get("file"))
    name = file.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1] if "." in name else _text(entry.get("format"))
    started_at = _text(entry.get("started_at"))
    label, kind_class = kind_label(entry.get("kind"))
    caller_name = _text(entry.get("caller_name"))
    caller_number = _text(entry.get("caller_number"))
    if not caller_name and not caller_number:
        caller_number = "unknown"
    dst = _text(entry.get("dst"))
    did = _text(entry.get("did"))
    duration = _seconds(entry.get("duration"))
    billsec = _seconds(entry.get("billsec"))
    shown = talk_seconds(entry)
    title = ""
    if billsec is not None and duration is not None and duration != billsec:
        title = f"{_clock(duration)} with ringing"
    elif billsec is None and duration is None and shown is not None:
        title = "length of the recording (the CDR has no duration)"
    disposition = _text(entry.get("disposition"))
    return _Row(
        id=anchor(entry.get("uniqueid")),
        started_at=started_at,
        time=_time_of(started_at),
        kind=label,
        kind_class=kind_class,
        caller_name=caller_name,
        caller_number=caller_number,
        dst=dst,
        did=did if did != dst else "",
        duration=_clock(shown) if shown is not None else "",
        duration_title=title,
        disposition=disposition,
        disposition_class=_DISPOSITIONS.get(disposition.upper(), "none"),
        # surrogateescape: a name that is not UTF-8 links to its own bytes
        href=quote(name, safe="", errors="surrogateescape"),
        playable=playable(ext),
        format="WAV49" if ext.lower() == "wav" else ext.upper(),  # shown when not playable
        size=_size(entry.get("size")),
    )


def talk_seconds(entry: Mapping[str, object]) -> int | None:
    """The talk time, which is what the recording holds (else the whole call's, else, with
    no CDR duration, how long the recording plays)."""
    billsec = _seconds(entry.get("billsec"))
    if billsec is not None:
        return billsec
    duration = _seconds(entry.get("duration"))
    return duration if duration is not None else _audio(entry)


def _audio(entry: Mapping[str, object]) -> int | None:
    value = entry.get("audio_seconds")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value + 0.5)


def render(template: jinja2.Template, **context: object) -> bytes:
    """The page as UTF-8, encoded piece by piece: one "…" would make a whole str of a busy
    day two bytes a character, and `render` first lists its hundreds of thousands of
    pieces. A lone surrogate (text that was not UTF-8 at its source) shows as "?"."""
    page = io.BytesIO()
    for piece in template.generate(**context):
        page.write(piece.encode("utf-8", "replace"))
    return page.getvalue()


def parse_day(day: str) -> date:
    """ "2024/03/15" -> date; ValueError for anything else (it becomes a path and links)."""
    if not _DAY.fullmatch(day):
        raise ValueError(f"not a YYYY/MM/DD day: {day!r}")
    year, month, dom = (int(part) for part in day.split("/"))
    return date(year, month, dom)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _seconds(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(int(value), 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _clock(seconds: int) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _hours(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    if hours:
        return f"{hours} h {minutes:02} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def _time_of(started_at: str) -> str:
    """The wall-clock time of the PBX (the offset it was written with): "10:15:02"."""
    if not started_at:
        return ""
    try:
        return datetime.fromisoformat(started_at).strftime("%H:%M:%S")
    except ValueError:
        return started_at


def _size(value: object) -> str:
    """1234567 -> "1.2 MB" (decimal units, as file managers show them)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return ""
    size, unit = float(value), "B"
    for bigger in ("kB", "MB", "GB"):
        if size < 1000:
            break
        size, unit = size / 1000, bigger
    if unit == "B":
        return f"{value} B"
    return f"{size:.1f} {unit}" if size < 10 else f"{size:.0f} {unit}"


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
