"""Destination retention: day folders older than retention.destination_days lose their
unheld recordings; their manifest and page are rewritten by the next publish (or removed
when nothing is left), the rows become expired and are never shipped again.

The row says expired first (with its day marked for publishing), then the destination's
ledger (agent.publish.expired) has it, then its files go: a pass cut anywhere is finished
by the next one (`Store.expiring`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.publish import expired, manifest
from agent.store.state import Row, Store
from agent.testhooks import crash_point
from agent.transport import Transport

if TYPE_CHECKING:
    from agent.metrics import Metrics
    from agent.roles.health import NoMetrics


@dataclass(frozen=True)
class Retired:
    """One recording gone from a place (or, in a dry run, that would be): an original
    from the spool, or a shipped copy from the destination."""

    id: int
    path: str  # spool-relative for the spool rules; the remote path for "destination"
    size: int
    rule: str  # "age", "low-disk" or "destination"


def expire_days(
    *,
    store: Store,
    transport: Transport,
    metrics: Metrics | NoMetrics,
    days: float,
    dry_run: bool,
    now: float,
) -> list[Retired]:
    """Expire what is due at `now`; returns it (what would be, in a dry run). Raises the
    transport's DestinationDown or TransientError: the rest waits for the next pass."""
    cutoff = datetime.fromtimestamp(now - days * 86400).strftime("%Y/%m/%d")
    reason = f"destination retention: older than {days:g} days"
    found: list[Retired] = []
    for day in store.days.older_than(cutoff):
        rows = [r for r in manifest.day_rows(store, day) if not store.holds.covers(r.id)]
        found += [
            Retired(r.id, r.remote_path or "", r.shipped_size or 0, "destination") for r in rows
        ]
        if rows and not dry_run:
            store.expire([r.id for r in rows], day=day, reason=reason, now=now)
    if not dry_run:
        _remove_expired(store, transport, metrics, now)
    return found


def _remove_expired(
    store: Store, transport: Transport, metrics: Metrics | NoMetrics, now: float
) -> None:
    by_day: dict[str, list[Row]] = {}
    for row in store.expiring():
        assert row.remote_path is not None
        by_day.setdefault(manifest.day_of(row.remote_path), []).append(row)
    for day, rows in by_day.items():
        expired.record(transport, day, (_ledger_entry(r, now) for r in rows))
        crash_point("retention:ledger-written")
        for row in rows:
            assert row.remote_path is not None
            transport.remove(row.remote_path)
            transport.remove(f"{row.remote_path}.json")  # its sidecar, if it has one
            store.remote_removed(row.id, now=now)
            metrics.retired(rule="destination", size=row.shipped_size or 0)


def _ledger_entry(row: Row, now: float) -> dict[str, Any]:
    return {
        "file": row.remote_path,
        "original": row.path,
        "uniqueid": row.uniqueid,
        "expired_at": now,
    }
