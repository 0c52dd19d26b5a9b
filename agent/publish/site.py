"""What the destination shows beside the recordings, rebuilt from the state database and
never by listing the remote: day manifests and pages, the root page, the static files.
Incremental: only the days touched since the last publish, then the root."""

from __future__ import annotations

import hashlib
import itertools
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
    """Publish every day touched since the last time, then the month search files of those
    days, then the root; return how many days. `site`: the manifests say whose recordings
    they list (a shared root's site folder). (`searchable=False`: no search files, for
    the benchmark's baseline.)"""
    days = store.days.dirty()
    if not days:
        return 0
    generated = datetime.fromtimestamp(now, UTC).astimezone().isoformat(timespec="seconds")
    if pages.enabled:
        _publish_static(store, transport, now, pages, searchable=searchable)
    searching = pages.enabled and searchable
    for month, month_days in itertools.groupby(days, key=search.month_of):
        # The days' files, then their month's search file, and only then the days marked
        # published: a pass cut anywhere leaves them dirty, to be written again.
        published: dict[str, tuple[int, bytes | None]] = {}
        for day in month_days:
            published[day] = _publish_day(
                store, transport, day, now, pages, generated, searching, site
            )
        if searching:
            _publish_month(store, transport, month, published, now)
        for day, (count, part) in published.items():
            if count:
                store.days.published(day, count, now=now, search=part)
                log.info(kv("published", day=day, recordings=count))
            else:
                store.days.emptied(day, now=now)
                log.info(kv("day-emptied", day=day))
    if pages.enabled:
        counts = store.days.counts()
        if searchable:
            transport.write_bytes("search/months.json", search.render_months(counts))
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
) -> tuple[int, bytes | None]:
    """Write one day's manifest and page; return how many recordings it holds and, when
    `searching`, its part of the month's search file."""
    if next(manifest.day_rows(store, day), None) is None:  # all of it expired
        transport.remove(f"{day}/manifest.json")
        transport.remove(f"{day}/index.html")
        return 0, None
    # Two passes over the day's rows, each holding one row at a time: a call centre's
    # day of 15,000 calls as objects would cost tens of MB the allocator then keeps.
    totals = index.DayTotals()
    part = search.DayPart(day) if searching else None
    entries = _counted(_entries(store, day, site, part), totals)
    transport.write_bytes(f"{day}/manifest.json", manifest.render(day, entries, now))
    crash_point("manifest:written")
    if pages.enabled:
        page = index.render_day(
            day,
            _entries(store, day, site),
            title=pages.title,
            generated_at=generated,
            totals=totals,
        )
        transport.write_bytes(f"{day}/index.html", page)
    return totals.count, None if part is None else part.data()


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


def _publish_month(
    store: Store,
    transport: Transport,
    month: str,
    fresh: dict[str, tuple[int, bytes | None]],
    now: float,
) -> None:
    """Rewrite a month's search file from its days' parts: `fresh` (count, part) for the
    days just written, the stored ones for the others (made again from the rows when
    missing)."""
    parts = dict(store.days.searches(month.replace("-", "/")))
    for day, (count, part) in fresh.items():
        if count:
            parts[day] = part
        else:  # emptied in this same pass
            parts.pop(day, None)
    for day, part in parts.items():
        if part is None:  # published before the search files, or rebuilt
            day_part = search.DayPart(day)
            for _ in _entries(store, day, None, day_part):
                pass
            parts[day] = day_part.data()
            store.days.set_search(day, parts[day] or b"", now=now)
    if not parts:  # all of it expired or erased
        transport.remove(search.path_of(month))
        return
    texts = (parts[day] or b"" for day in sorted(parts, reverse=True))  # newest first
    transport.write_bytes(search.path_of(month), search.render_month(month, texts))


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
