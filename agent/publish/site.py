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
from agent.publish import index, manifest
from agent.store.state import Store
from agent.testhooks import crash_point
from agent.transport import Transport

log = logging.getLogger(__name__)

_STATIC_VERSION = hashlib.sha256(
    b"".join(name.encode() + content for name, content in sorted(index.STATIC.items()))
).hexdigest()


def publish_dirty(
    store: Store, transport: Transport, now: float, pages: IndexConfig, *, site: str | None = None
) -> int:
    """Publish every day touched since the last time, then the root; return how many days.
    `site`: the manifests say whose recordings they list (a shared root's site folder)."""
    days = store.days.dirty()
    if not days:
        return 0
    generated = datetime.fromtimestamp(now, UTC).astimezone().isoformat(timespec="seconds")
    if pages.enabled and store.meta("static_version") != _STATIC_VERSION:
        for name, content in index.STATIC.items():
            transport.write_bytes(name, content)
        store.set_meta("static_version", _STATIC_VERSION, now=now)
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
        entries = _counted(_entries(store, day, site), totals)
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
        store.days.published(day, totals.count, now=now)
        log.info(kv("published", day=day, recordings=totals.count))
    if pages.enabled:
        root = index.render_root(store.days.counts(), title=pages.title, generated_at=generated)
        transport.write_bytes("index.html", root)
    return len(days)


def _entries(store: Store, day: str, site: str | None) -> Iterator[dict[str, Any]]:
    return (manifest.entry(row, site=site) for row in manifest.day_rows(store, day))


def _counted(
    entries: Iterable[dict[str, Any]], totals: index.DayTotals
) -> Iterator[dict[str, Any]]:
    """`entries`, added to `totals` as they pass."""
    for entry in entries:
        totals.add(entry)
        yield entry
