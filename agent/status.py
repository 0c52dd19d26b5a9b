"""Read-only queries behind `status`, `list` and `show` (and later metrics, status.json)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.model import RecordingState
from agent.store.state import Row, Store

if TYPE_CHECKING:
    from agent.config import Config

SITE_DAYS = 31  # the days a site's status.json counts, for the shared root page

BACKLOG_STATES = (
    RecordingState.PENDING,
    RecordingState.WAITING_CDR,
    RecordingState.UPLOADING,
    RecordingState.FAILED,
)


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).astimezone().isoformat(timespec="seconds")


def _scalar(store: Store, sql: str, params: list[Any] | None = None) -> Any:
    return store.conn.execute(sql, params or []).fetchone()[0]


def summary(store: Store, config: Config, now: float) -> dict[str, Any]:
    """The DESIGN.md `status --json` document."""
    counts = _counts(store)
    backlog = [s.value for s in BACKLOG_STATES]
    marks = ",".join("?" * len(backlog))
    oldest = _scalar(
        store,
        f"SELECT min(seen_at) FROM recordings WHERE state IN ({marks})",
        backlog,
    )
    last_error = _latest_event(store, ("failed", "failed-staging", "quarantined"))
    document = {
        "version": __version__,
        "host": socket.gethostname(),
        "counts": counts,
        "backlog": sum(counts[s] for s in backlog),
        "oldest_pending_seconds": None if oldest is None else round(max(0.0, now - oldest), 1),
        "last_upload_at": iso(_scalar(store, "SELECT max(uploaded_at) FROM recordings")),
        "last_error": None
        if last_error is None
        else {
            "at": iso(last_error[0]),
            "id": last_error[1],
            "path": last_error[2],
            "error": last_error[3],
            "state": last_error[4].removesuffix("-staging"),
        },
        "destination": _destination(store),
        "cdr": {"type": config.cdr.type, **_meta(store, "cdr")},
        "retention": _retention(store, config),
        "generated_at": iso(now),
    }
    site = config.destination.site
    if site is not None:  # a shared root: its page lists this site's calls per day
        recent = sorted(store.days.counts(), reverse=True)[:SITE_DAYS]
        document |= {"site": site, "days": dict(recent)}
    return document


def _retention(store: Store, config: Config) -> dict[str, Any]:
    """What retention took out of the spool (all time), the holds, the spool's free space."""
    removed, size = store.spool_bytes_removed()
    (holds,) = store.conn.execute("SELECT count(*) FROM holds").fetchone()
    free = None
    try:
        st = os.statvfs(config.spool.path)
        free = round(100.0 * st.f_bavail / st.f_blocks, 1) if st.f_blocks else None
    except OSError:
        pass  # a spool that is not there: doctor says so
    return {
        "spool_days": config.retention.spool_days,
        "removed": removed,
        "removed_bytes": size,
        "holds": int(holds),
        "spool_free_percent": free,
    }


def _counts(store: Store) -> dict[str, int]:
    """Recordings per state. Not one GROUP BY over every row (65 ms at a million rows):
    count(*) alone only counts b-tree pages (5 ms), and the rows not done, few, are
    grouped over the state index either side of 'done'; one read transaction for both."""
    counts = {state.value: 0 for state in RecordingState}
    conn = store.conn
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        total = _scalar(store, "SELECT count(*) FROM recordings")
        for state, count in conn.execute(
            "SELECT state, count(*) FROM recordings WHERE state < 'done' GROUP BY state"
            " UNION ALL SELECT state, count(*) FROM recordings WHERE state > 'done'"
            " GROUP BY state"
        ):
            counts[state] = count
    finally:
        if own:
            conn.execute("COMMIT")
    counts[RecordingState.DONE.value] = total - sum(counts.values())
    return counts


def _latest_event(store: Store, names: tuple[str, ...]) -> tuple[Any, ...] | None:
    """(at, recording id, path, detail, event) of the newest event named one of `names`:
    one lookup per name on the events_event index, however long the history."""
    newest = " UNION ALL ".join("SELECT max(id) AS id FROM events WHERE event = ?" for _ in names)
    found: tuple[Any, ...] | None = store.conn.execute(
        "SELECT e.at, e.recording_id, r.path, e.detail, e.event FROM events e"
        " LEFT JOIN recordings r ON r.id = e.recording_id"
        f" WHERE e.id = (SELECT max(id) FROM ({newest}))",
        names,
    ).fetchone()
    return found


def _meta(store: Store, key: str) -> dict[str, Any]:
    """A health record the daemon keeps in the meta table ({"state", "reason"})."""
    raw = store.meta(key)
    value: dict[str, Any] = json.loads(raw) if raw else {"state": "unknown", "reason": None}
    return value


def _destination(store: Store) -> dict[str, Any]:
    value = _meta(store, "destination")
    if value["state"] == "ok":
        # "failing": the most recent upload outcome was a failure (it will be retried);
        # a failure of our own staging ("failed-staging") says nothing about it.
        latest = _latest_event(store, ("done", "failed"))
        if latest is not None and latest[4] == "failed":
            value = {"state": "failing", "reason": latest[3]}
    return value


def row_json(row: Row) -> dict[str, Any]:
    data = {f.name: getattr(row, f.name) for f in fields(row)}
    for key in ("seen_at", "settled_at", "uploaded_at", "updated_at", "spool_removed_at"):
        data[key] = iso(data[key])
    data["next_attempt_at"] = iso(data["next_attempt_at"]) if row.state != "done" else None
    return data


def destination_state(row: Row) -> dict[str, Any]:
    """One recording's state at one destination (`show` with several)."""
    return {
        "id": row.id,
        "state": row.state,
        "reason": row.reason,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at) if row.state != "done" else None,
        "remote_path": row.remote_path,
        "uploaded_at": iso(row.uploaded_at),
    }


def events(store: Store, rid: int) -> list[dict[str, Any]]:
    return [
        {"at": iso(at), "event": event, "detail": detail}
        for at, event, detail in store.conn.execute(
            "SELECT at, event, detail FROM events WHERE recording_id = ? ORDER BY id", (rid,)
        )
    ]


PER_DESTINATION = (
    "counts",
    "backlog",
    "oldest_pending_seconds",
    "last_upload_at",
    "last_error",
    "destination",
)


def fleet_summary(stores: Mapping[str, Store], config: Config, now: float) -> dict[str, Any]:
    """`status --json` with every destination: the first one's document (what it always
    was), and with several, `destinations`: each one's backlog and state by name (one
    whose agent has not run yet: its state "new")."""
    first = config.destination.name
    document = summary(stores[first], config, now)
    if len(config.destinations) == 1:
        return document
    each: dict[str, Any] = {}
    for name, destination in config.destinations.items():
        own = document if name == first else None
        if own is None and name in stores:
            own = summary(stores[name], config.for_destination(name), now)
        if own is None:
            each[name] = {
                "type": destination.type,
                "where": destination.where,
                "destination": {"state": "new", "reason": "the agent has not run with it yet"},
            }
            continue
        each[name] = {"type": destination.type, "where": destination.where} | {
            key: own[key] for key in PER_DESTINATION
        }
    document["destinations"] = each
    return document
