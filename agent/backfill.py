"""`recsync backfill`: the recordings the first start left out (older than
`spool.backfill_days`), queued at a gentle rate so a live PBX is not starved."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from agent.model import Identity, RecordingState
from agent.spool.scan import day_folders, files_in
from agent.store.state import Store

BACKFILL_REASON = "older than the backfill window"
SINCE_REASON = "started before destination.since"
SKIPPED_FOR_AGE = (BACKFILL_REASON, SINCE_REASON)  # what `recsync backfill` ships


@dataclass(frozen=True)
class Candidate:
    rel: str
    size: int


def spool_files(root: Path) -> Iterator[str]:
    yield from files_in(root, "")
    for folder in day_folders(root, date.min, date.max):
        yield from files_in(root, folder)


def find(
    store: Store, spool: Path, extensions: tuple[str, ...], since: float | None
) -> list[Candidate]:
    """Spool recordings never shipped because they were too old: not in the state database,
    or skipped for their age. `since`: only those modified since (epoch seconds)."""
    found = []
    for rel in spool_files(spool):
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(".") or name.rsplit(".", 1)[-1] not in extensions or "." not in name:
            continue
        try:
            st = os.lstat(spool / rel)
        except FileNotFoundError:
            continue
        if since is not None and st.st_mtime < since:
            continue
        row = store.by_stem(rel.rsplit(".", 1)[0])
        if row is None or (
            row.state == RecordingState.SKIPPED.value and row.reason in SKIPPED_FOR_AGE
        ):
            found.append(Candidate(rel, st.st_size))
    return found


def queue(
    store: Store, spool: Path, candidates: list[Candidate], *, now: float, rate: float
) -> list[int]:
    """Make the candidates pending, due one after another at `rate` per second (0: all
    now). Returns their row ids."""
    ids = []
    for n, candidate in enumerate(candidates):
        due = now + (n / rate if rate > 0 else 0.0)
        st = os.lstat(spool / candidate.rel)
        identity = Identity(st.st_size, st.st_mtime_ns, st.st_ino)
        stem = candidate.rel.rsplit(".", 1)[0]
        row = store.by_stem(stem)
        if row is None:
            rid = store.add(stem=stem, path=candidate.rel, identity=identity, now=now)
        else:
            rid = row.id
            store.reopen(rid, path=candidate.rel, identity=identity, now=now, why="backfill")
        store.defer(rid, until=due, reason="queued by backfill", now=now)
        ids.append(rid)
    return ids


def progress(store: Store, ids: list[int]) -> tuple[int, int]:
    """(finished, total) of the queued rows: finished = no longer pending or in flight."""
    active = {
        s.value
        for s in (
            RecordingState.PENDING,
            RecordingState.WAITING_CDR,
            RecordingState.UPLOADING,
            RecordingState.FAILED,
        )
    }
    finished = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        (busy,) = store.conn.execute(
            f"SELECT count(*) FROM recordings WHERE id IN ({marks}) AND state IN"
            f" ({','.join('?' * len(active))})",
            [*chunk, *active],
        ).fetchone()
        finished += len(chunk) - int(busy)
    return finished, len(ids)
