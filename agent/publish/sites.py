"""The root page of a shared root (destination.layout = "sites"): every site's heartbeat
and calls per day, made from a listing of `<site>/status.json` at the destination.

Every agent writes it after its own status.json, from what all the sites wrote last, so
the page converges whichever agent wrote it last, with no lock between the PBXs. What it
reads was written by other agents (or by hand): it is data, shown as text (autoescape),
never trusted as a path or markup; a link is made only of a folder name that could be a
site and a day that is a date.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from agent.config import RESERVED_SITES, SITE_NAME
from agent.errors import PermanentError
from agent.publish import index
from agent.transport import Transport

SILENT_SECONDS = 600  # a heartbeat older than this marks its site silent
STATUS_FILE = "status.json"
MAX_DAYS = 31  # the rows of the calls-per-day table
CONVERGE_TRIES = 3  # writes of the page in one heartbeat, while the listing still moves


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """One site as its status.json says, in display strings (no markup)."""

    folder: str  # the folder name: a safe site name (the listing is filtered)
    name: str  # what its status.json calls it (shown as text); the folder's when absent
    host: str
    last_seen: str  # the status.json's generated_at as written, "" when unreadable
    age: str  # "3 min ago"
    silent: bool
    backlog: str
    state: str  # the destination's state as that agent saw it: ok, failing, paused
    reason: str
    days: Mapping[str, int] = field(default_factory=dict)  # "YYYY/MM/DD" -> calls


def collect(root: Transport, now: float) -> list[SiteStatus]:
    """Every site at the root: each folder that could be a site and holds a status.json."""
    sites = []
    for folder in root.listdir():
        if not SITE_NAME.fullmatch(folder) or folder.lower() in RESERVED_SITES:
            continue  # index.html, static/, a YYYY/ of a single layout, temporaries
        try:
            data = root.read_bytes(f"{folder}/{STATUS_FILE}")
        except PermanentError:
            continue  # not a folder after all, or not readable: not a site we can show
        if data is not None:
            sites.append(parse(folder, data, now))
    return sites


def parse(folder: str, data: bytes, now: float) -> SiteStatus:
    """What a site's status.json says, whatever it holds: bad values show as unknown."""
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {}
    seen = _text(document.get("generated_at"))
    at = _epoch(seen)
    destination = document.get("destination")
    destination = destination if isinstance(destination, dict) else {}
    return SiteStatus(
        folder=folder,
        name=_text(document.get("site")) or folder,
        host=_text(document.get("host")),
        last_seen=seen,
        age="" if at is None else _ago(max(0.0, now - at)),
        silent=at is None or now - at > SILENT_SECONDS,
        backlog=_count(document.get("backlog")),
        state=_text(destination.get("state")) or "unknown",
        reason=_text(destination.get("reason")),
        days=_days(document.get("days")),
    )


@dataclass(slots=True)
class _DayRow:
    label: str
    cells: list[tuple[str, str]]  # (href or "", count) per site, in the sites' order


def render(sites: Iterable[SiteStatus], *, title: str, generated_at: str) -> bytes:
    """The shared root's `index.html`."""
    shown = sorted(sites, key=lambda s: s.folder)
    days = sorted({day for s in shown for day in s.days}, reverse=True)[:MAX_DAYS]
    rows = []
    for day in days:
        when = index.parse_day(day)
        cells = [
            (f"{quote(s.folder)}/{day}/index.html", f"{s.days[day]:,}")
            if day in s.days
            else ("", "")
            for s in shown
        ]
        rows.append(_DayRow(label=f"{when:%a} {when.day} {when:%b} {when.year}", cells=cells))
    silent = sum(s.silent for s in shown)
    summary = index.plural(len(shown), "site")
    if silent:
        summary += f", {silent} silent (no heartbeat for over {SILENT_SECONDS // 60} minutes)"
    return index.render(
        index.template("sites.html"),
        title=title,
        generated_at=generated_at,
        home="index.html",
        static="static/",
        summary=summary,
        sites=[(s, quote(s.folder)) for s in shown],
        silent_seconds=SILENT_SECONDS,
        rows=rows,
    )


def publish(root: Transport, now: float, *, title: str, static: bool = True) -> int:
    """Write the root page and the search page over every site (and, with `static`, the
    static files they use) from every site's status.json; returns how many sites it
    lists.

    Agents write it with no lock, so a page made from an older listing may land after a
    newer one. Each writer therefore lists again after writing, and writes again when a
    site appeared or changed meanwhile: whichever write lands last was followed by a
    listing that matched it, so it shows every site whose status.json came before it."""
    generated = datetime.fromtimestamp(now, UTC).astimezone().isoformat(timespec="seconds")
    for name, content in index.STATIC.items() if static else ():
        root.write_bytes(name, content)
    sites = collect(root, now)
    for _ in range(CONVERGE_TRIES):
        listed = [(s.folder, s.name) for s in sorted(sites, key=lambda s: s.folder)]
        root.write_bytes("search.html", index.render_search(title=title, sites=listed))
        root.write_bytes("index.html", render(sites, title=title, generated_at=generated))
        again = collect(root, now)
        if again == sites:
            break
        sites = again
    return len(sites)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _count(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return f"{value:,}"
    return "unknown"


def _epoch(iso: str) -> float | None:
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None  # no offset: unknown


def _days(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    days: dict[str, int] = {}
    for day, count in value.items():
        try:
            index.parse_day(day)
        except (ValueError, TypeError):
            continue
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            days[day] = count
    return days


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s ago"
    if seconds < 90 * 60:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"
