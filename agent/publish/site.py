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
from agent.store.state import Row, Store
from agent.testhooks import crash_point
from agent.transport import Transport

log = logging.getLogger(__name__)

_STATIC_VERSION = hashlib.sha256(
    b"".join(name.encode() + content for name, content in sorted(index.STATIC.items()))
).hexdigest()


def publish_dirty(
    store: Store, transport: Transport, now: float, pages: IndexConfig, *, searchable: bool = True
) -> int:
    """Publish every day touched since the last time, then the month search files of those
    days, then the root; return how many days. (`searchable=False`: no search files, for
    the benchmark's baseline.)"""
    days = store.days.dirty()
    if not days:
        return 0
    generated = datetime.fromtimestamp(now, UTC).astimezone().isoformat(timespec="seconds")
    if pages.enabled:
        _publish_static(store, transport, now, pages, searchable=searchable)
    for day in days:
        if next(manifest.day_rows(store, day), None) is None:  # all of it expired
            transport.remove(f"{day}/manifest.json")
            transport.remove(f"{day}/index.html")
            store.days.emptied(day, now=now)
            log.info(kv("day-emptied", day=day))
            continue
        # Two passes over the day's rows, each holding one row at a time: a call centre's
        # day of 15,000 calls as objects would cost tens of MB the allocator then keeps.
        totals = index.DayTotals()
        entries = _counted(_entries(store, day), totals)
        transport.write_bytes(f"{day}/manifest.json", manifest.render(day, entries, now))
        crash_point("manifest:written")
        if pages.enabled:
            page = index.render_day(
                day, _entries(store, day), title=pages.title, generated_at=generated, totals=totals
            )
            transport.write_bytes(f"{day}/index.html", page)
        store.days.published(day, totals.count, now=now)
        log.info(kv("published", day=day, recordings=totals.count))
    if pages.enabled:
        counts = store.days.counts()
        if searchable:
            _publish_search(store, transport, {search.month_of(day) for day in days}, counts)
        root = index.render_root(counts, title=pages.title, generated_at=generated)
        transport.write_bytes("index.html", root)
    return len(days)


def _publish_static(
    store: Store, transport: Transport, now: float, pages: IndexConfig, *, searchable: bool
) -> None:
    """The static files and search.html (which changes only with them or the title),
    written when they differ from what was published last."""
    files = dict(index.STATIC)
    if searchable:
        files["search.html"] = index.render_search(title=pages.title)
    version = hashlib.sha256(_STATIC_VERSION.encode() + files.get("search.html", b"")).hexdigest()
    if store.meta("static_version") == version:
        return
    for name, content in files.items():
        transport.write_bytes(name, content)
    store.set_meta("static_version", version, now=now)


def _publish_search(
    store: Store, transport: Transport, months: set[str], counts: list[tuple[str, int]]
) -> None:
    """Rewrite the search file of each month a published day is in, whole, from the state
    database (the months not touched stay as they are), then the list of months."""
    for month in sorted(months):
        rows = _month_rows(store, month)
        first = next(rows, None)
        if first is None:  # all of it expired or erased
            transport.remove(search.path_of(month))
            continue
        entries = ((manifest.entry(row), row.extension) for row in _chain(first, rows))
        transport.write_bytes(search.path_of(month), search.render_month(month, entries))
    transport.write_bytes("search/months.json", search.render_months(counts))


def _month_rows(store: Store, month: str) -> Iterator[Row]:
    low, high = search.month_range(month)
    return manifest.rows_between(store, low, high)


def _chain(first: Row, rest: Iterator[Row]) -> Iterator[Row]:
    yield first
    yield from rest


def _entries(store: Store, day: str) -> Iterator[dict[str, Any]]:
    return (manifest.entry(row) for row in manifest.day_rows(store, day))


def _counted(
    entries: Iterable[dict[str, Any]], totals: index.DayTotals
) -> Iterator[dict[str, Any]]:
    """`entries`, added to `totals` as they pass."""
    for entry in entries:
        totals.add(entry)
        yield entry
