"""What the destination shows beside the recordings, rebuilt from the state database and
never by listing the remote: day manifests and pages, the root page, the static files.
Incremental: only the days touched since the last publish, then the root."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

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


def publish_dirty(store: Store, transport: Transport, now: float, pages: IndexConfig) -> int:
    """Publish every day touched since the last time, then the root; return how many days."""
    days = store.dirty_days()
    if not days:
        return 0
    generated = datetime.fromtimestamp(now, UTC).astimezone().isoformat(timespec="seconds")
    if pages.enabled and store.meta("static_version") != _STATIC_VERSION:
        for name, content in index.STATIC.items():
            transport.write_bytes(name, content)
        store.set_meta("static_version", _STATIC_VERSION)
    for day in days:
        entries = [manifest.entry(row) for row in manifest.day_rows(store, day)]
        transport.write_bytes(f"{day}/manifest.json", manifest.render(day, entries, now))
        crash_point("manifest:written")
        if pages.enabled:
            page = index.render_day(day, entries, title=pages.title, generated_at=generated)
            transport.write_bytes(f"{day}/index.html", page)
        store.day_published(day, len(entries))
        log.info(kv("published", day=day, recordings=len(entries)))
    if pages.enabled:
        root = index.render_root(store.day_counts(), title=pages.title, generated_at=generated)
        transport.write_bytes("index.html", root)
    return len(days)
