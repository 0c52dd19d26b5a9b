"""What the destination shows beside the recordings, rebuilt from the state database and
never by listing the remote: day manifests and pages, the root page, the static files.
Incremental: only the days touched since the last publish, then the root."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from agent.config import IndexConfig
from agent.log import kv
from agent.publish import index, manifest, search
from agent.store.state import Store
from agent.testhooks import crash_point
from agent.transport import Transport

log = logging.getLogger(__name__)

SEARCH_LAYOUT = "search_layout"  # meta: "days" once every published day has its file
SEARCH_LISTING = "search_listing"  # meta: the sha256 of the search/months.json written

_STATIC_VERSION = hashlib.sha256(
    b"".join(name.encode() + content for name, content in sorted(index.STATIC.items()))
).hexdigest()


def publish_dirty(
    store: Store,
    transport: Transport,
    now: float,
    pages: IndexConfig,
    *,
    site: str | None = None,
    searchable: bool = True,
) -> int:
    """Publish every day touched since the last time (its manifest, page and search file),
    then the search listing and the root; return how many days. `site`: the manifests
    and the listing say whose recordings they list (a shared root's site folder).
    (`searchable=False`: no search files, for the benchmark's baseline.)"""
    days = store.days.dirty()
    if not days:
        return 0
    generated = datetime.fromtimestamp(now, UTC).astimezone().isoformat(timespec="seconds")
    if pages.enabled:
        _publish_static(store, transport, now, pages, searchable=searchable)
    searching = pages.enabled and searchable
    for day in days:
        # The day's files, its search file with them, and only then the day marked
        # published: a pass cut anywhere leaves it dirty, to be written again.
        count = _publish_day(store, transport, day, now, pages, generated, searching, site)
        if count:
            store.days.published(day, count, now=now)
            log.info(kv("published", day=day, recordings=count))
        else:
            store.days.emptied(day, now=now)
            log.info(kv("day-emptied", day=day))
    if pages.enabled:
        counts = store.days.counts()
        if searchable:
            if store.meta(SEARCH_LAYOUT) != "days":
                _search_files_of_every_day(store, transport, counts, now, site)
            _publish_listing(store, transport, [day for day, _ in counts], now, site)
        root = index.render_root(counts, title=pages.title, generated_at=generated)
        transport.write_bytes("index.html", root)
    return len(days)


def _publish_day(
    store: Store,
    transport: Transport,
    day: str,
    now: float,
    pages: IndexConfig,
    generated: str,
    searching: bool,
    site: str | None,
) -> int:
    """Write one day's manifest, page and, when `searching`, search file; return how
    many recordings it holds."""
    if next(manifest.day_rows(store, day), None) is None:  # all of it expired
        transport.remove(f"{day}/manifest.json")
        transport.remove(f"{day}/index.html")
        if searching:
            transport.remove(search.path_of(day))
        return 0
    # Two passes over the day's rows, each holding one row at a time: a call centre's
    # day of 15,000 calls as objects would cost tens of MB the allocator then keeps.
    totals = index.DayTotals()
    part = search.DayPart(day) if searching else None
    entries = _counted(_entries(store, day, site, part), totals)
    transport.write_bytes(f"{day}/manifest.json", manifest.render(day, entries, now))
    crash_point("manifest:written")
    if part is not None:
        transport.write_bytes(search.path_of(day), part.data())
    if pages.enabled:
        page = index.render_day(
            day,
            _entries(store, day, site),
            title=pages.title,
            generated_at=generated,
            totals=totals,
        )
        transport.write_bytes(f"{day}/index.html", page)
    return totals.count


def _publish_static(
    store: Store, transport: Transport, now: float, pages: IndexConfig, *, searchable: bool
) -> None:
    """The static files and search.html (which changes only with them or the title),
    written when they differ from what was published last."""
    page = index.render_search(title=pages.title)
    files = dict(index.STATIC) | ({"search.html": page} if searchable else {})
    version = hashlib.sha256(_STATIC_VERSION.encode() + page).hexdigest()
    if store.meta("static_version") == version:
        return
    for name, content in files.items():
        transport.write_bytes(name, content)
    store.set_meta("static_version", version, now=now)


def _publish_listing(
    store: Store, transport: Transport, days: list[str], now: float, site: str | None
) -> None:
    """`search/months.json`, when it differs from what was published last: a new call on
    a day already listed leaves it as it is."""
    listing = search.render_months(days, site=site)
    version = hashlib.sha256(listing).hexdigest()
    if store.meta(SEARCH_LISTING) != version:
        transport.write_bytes("search/months.json", listing)
        store.set_meta(SEARCH_LISTING, version, now=now)


def _search_files_of_every_day(
    store: Store,
    transport: Transport,
    counts: list[tuple[str, int]],
    now: float,
    site: str | None,
) -> None:
    """Once, on a root published before the search files were one a day: every published
    day's, made from its rows, and the month files of the first format removed. Cut
    anywhere, it is all done again at the next publish."""
    months = set()
    for day, _ in counts:
        part = search.DayPart(day)
        for _entry in _entries(store, day, site, part):
            pass
        transport.write_bytes(search.path_of(day), part.data())
        months.add(search.month_of(day))
    for month in sorted(months):
        transport.remove(search.old_month_path(month))
    store.set_meta(SEARCH_LAYOUT, "days", now=now)
    log.info(kv("search-files-made", days=len(counts)))


def _entries(
    store: Store, day: str, site: str | None, part: search.DayPart | None = None
) -> Iterator[dict[str, Any]]:
    for row in manifest.day_rows(store, day):
        entry = manifest.entry(row, site=site)
        if part is not None:
            part.add(entry, row.extension)
        yield entry


def _counted(
    entries: Iterable[dict[str, Any]], totals: index.DayTotals
) -> Iterator[dict[str, Any]]:
    """`entries`, added to `totals` as they pass."""
    for entry in entries:
        totals.add(entry)
        yield entry
