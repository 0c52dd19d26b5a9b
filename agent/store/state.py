"""Every write to the state database, one transaction per transition."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.model import CallInfo, Identity, Recording, RecordingState
from agent.store import days, holds, webhooks
from agent.store.days import Days
from agent.store.erasure import Erasure
from agent.store.holds import Holds
from agent.store.tx import Transaction, transaction
from agent.store.webhooks import Webhooks

BUSY_TIMEOUT_MS = 10_000
FULL_DISK_BYTES = 1 << 20  # less free space than this next to an error: say why
# Events kept however old: what left the spool, why a copy was shipped again, the holds.
AUDIT_EVENTS = (
    "spool-deleted",
    "spool-moved",
    "spool-absent",
    "spool-restored",
    "requeued",
    "hold-added",
    "hold-removed",
    "expired",
    "remote-removed",
    "erased",
    "erasure",
    "scrubbed",
)
# States a worker may pick up when their next_attempt_at has come.
ACTIVE_STATES = (RecordingState.PENDING, RecordingState.WAITING_CDR, RecordingState.FAILED)


REBUILD = (
    "; stop the agent, keep a copy of the file, then `recsync state rebuild` makes a new"
    " one from the spool and the destination's manifests"
)


class StateDatabaseError(AgentError):
    """The state database cannot be opened or is damaged."""


@dataclass(frozen=True, slots=True)
class Row:
    """One recording as the database holds it (slots: a day page reads thousands)."""

    id: int
    stem: str
    path: str
    size: int
    mtime_ns: int
    inode: int
    state: str
    reason: str | None
    attempts: int
    next_attempt_at: float
    kind: str | None
    dst: str | None
    src: str | None
    started_at: str | None
    uniqueid: str | None
    extension: str | None
    era: str | None
    pattern: str | None
    format: str | None
    head: str | None
    remote_path: str | None
    obsolete_remote: str | None
    version: int
    sha256: str | None
    shipped_size: int | None
    seen_at: float
    settled_at: float | None
    uploaded_at: float | None
    updated_at: float
    cdr: str | None
    cdr_deadline: float | None
    caller_number: str | None
    caller_name: str | None
    cdr_dst: str | None
    did: str | None
    linkedid: str | None
    duration: int | None
    billsec: int | None
    disposition: str | None
    spool_removed_at: float | None  # a retention rule took the original out of the spool
    remote_removed_at: float | None  # destination retention removed its shipped files
    audio_seconds: float | None  # how long the shipped copy plays, from the audio itself

    @property
    def identity(self) -> Identity:
        return Identity(self.size, self.mtime_ns, self.inode)


_ROW_FIELDS = frozenset(f.name for f in fields(Row))
_COLUMNS = ", ".join(f.name for f in fields(Row))
_PARSED = ("kind", "dst", "src", "started_at", "uniqueid", "extension", "era", "pattern", "format")


def parsed_columns(recording: Recording) -> dict[str, Any]:
    """What a file name says, as the recordings table holds it."""
    data = recording.to_json()
    return {name: data[name] for name in _PARSED} | {"head": recording.head}


def _row(cursor: sqlite3.Cursor) -> Row | None:
    values = cursor.fetchone()
    return None if values is None else Row(*values)


def _cdr_values(info: CallInfo | None) -> dict[str, Any]:
    if info is None:
        return {"cdr": "missing"}
    return {
        "cdr": "found",
        "caller_number": info.caller_number,
        "caller_name": info.caller_name,
        "cdr_dst": info.dst,
        "did": info.did,
        "linkedid": info.linkedid,
        "duration": info.duration,
        "billsec": info.billsec,
        "disposition": info.disposition,
    }


def _full_disk_note(path: Path) -> str:
    # SQLite says "disk I/O error" when it cannot even make its -shm file.
    try:
        full = shutil.disk_usage(path.parent).free < FULL_DISK_BYTES
    except OSError:
        return ""
    return f" (the disk holding it is full: free space in {path.parent})" if full else ""


class Store:
    """The recordings table and its neighbours. Only this class changes them."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.webhooks = Webhooks(conn)  # the CRM outbox
        self.days = Days(conn)  # which day pages to rewrite
        holds.register(conn)
        self.holds = Holds(conn)  # legal holds: what retention never deletes
        self.erasure = Erasure(conn)  # `recsync forget` and its ledger

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Store:
        """Open (creating and migrating if needed) for the daemon and for CLI writes."""
        if not create and not path.exists():
            raise StateDatabaseError(f"no state database at {path} (has the agent run yet?)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Not checked per thread: a destination's agent is built on the main thread and
            # then runs on its own (agent.fleet), one thread at a time.
            conn = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL survives a killed process; a power cut may lose the last
            # transitions, which only causes a re-upload under the same remote name.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise StateDatabaseError(f"state database {path} is damaged: {result}{REBUILD}")
            # Imported here: sqlite-utils is only needed to migrate, and read-only CLI
            # commands start faster without it.
            from sqlite_utils import Database

            from agent.store.migrations import migrations

            migrations.apply(Database(conn))
        except sqlite3.OperationalError as exc:  # permissions, a missing folder, locks
            raise StateDatabaseError(
                f"cannot open state database {path}: {exc}{_full_disk_note(path)}"
            ) from exc
        except sqlite3.DatabaseError as exc:  # not a database, malformed
            raise StateDatabaseError(f"state database {path} is damaged: {exc}{REBUILD}") from exc
        return cls(conn)

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """Open for reading only, so a CLI run as root leaves no root-owned files behind."""
        if not path.exists():
            raise StateDatabaseError(f"no state database at {path} (has the agent run yet?)")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute("SELECT 1 FROM recordings LIMIT 1")
        except sqlite3.OperationalError as exc:
            raise StateDatabaseError(f"cannot read state database {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StateDatabaseError(f"state database {path} is damaged: {exc}{REBUILD}") from exc
        return cls(conn)

    def close(self) -> None:
        self.conn.close()

    def _write(self) -> contextlib.AbstractContextManager[Transaction]:
        return transaction(self.conn)

    def _set(
        self, rid: int, now: float, event: str, detail: str | None = None, **values: Any
    ) -> None:
        values["updated_at"] = now
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self._write() as conn:
            conn.execute(
                f"UPDATE recordings SET {assignments} WHERE id = ?",
                [*values.values(), rid],
            )
            conn.event(rid, now, event, detail)

    # --- reads ------------------------------------------------------------------------

    def get(self, rid: int) -> Row | None:
        return _row(self.conn.execute(f"SELECT {_COLUMNS} FROM recordings WHERE id = ?", (rid,)))

    def by_stem(self, stem: str) -> Row | None:
        return _row(self.conn.execute(f"SELECT {_COLUMNS} FROM recordings WHERE stem = ?", (stem,)))

    def find(self, ref: str) -> Row | None:
        """A row by id, uniqueid, spool-relative path or remote path."""
        query = f"SELECT {_COLUMNS} FROM recordings WHERE "
        if ref.isdigit():
            found = _row(self.conn.execute(query + "id = ?", (int(ref),)))
            if found:
                return found
        return _row(
            self.conn.execute(
                query + "uniqueid = ? OR path = ? OR remote_path = ? ORDER BY id DESC LIMIT 1",
                (ref, ref, ref),
            )
        )

    def by_uniqueid(self, uniqueid: str) -> list[Row]:
        """The recordings of a call's uniqueid, newest first (one call can have several)."""
        return self.rows("uniqueid = ?", [uniqueid], order="id DESC")

    def rows(
        self,
        where: str = "1",
        params: Iterable[Any] = (),
        *,
        order: str = "id",
        limit: int | None = None,
    ) -> list[Row]:
        return list(self.iter_rows(where, params, order=order, limit=limit))

    def iter_rows(
        self,
        where: str = "1",
        params: Iterable[Any] = (),
        *,
        order: str = "id",
        limit: int | None = None,
    ) -> Iterator[Row]:
        """`rows` one at a time: a day of thousands need not be in memory at once."""
        sql = f"SELECT {_COLUMNS} FROM recordings WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return (Row(*values) for values in self.conn.execute(sql, list(params)))

    def recent(
        self, *, state: str | None = None, seen_since: float | None = None, limit: int = 50
    ) -> list[Row]:
        """`recsync list`: newest first, optionally of one state and seen since a time."""
        where: list[str] = ["1"]
        params: list[object] = []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if seen_since is not None:
            where.append("seen_at >= ?")
            params.append(seen_since)
        return self.rows(" AND ".join(where), params, order="id DESC", limit=limit)

    def identities(self, paths: Iterable[str]) -> dict[str, tuple[str, Identity]]:
        """Known paths among `paths`: path -> (state, identity), for fast reconcile scans."""
        out: dict[str, tuple[str, Identity]] = {}
        batch = list(paths)
        for i in range(0, len(batch), 500):
            chunk = batch[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for path, state, size, mtime_ns, inode in self.conn.execute(
                "SELECT path, state, size, mtime_ns, inode FROM recordings"
                f" WHERE path IN ({marks})",
                chunk,
            ):
                out[path] = (state, Identity(size, mtime_ns, inode))
        return out

    def due(self, now: float, limit: int = 100) -> list[Row]:
        marks = ",".join("?" * len(ACTIVE_STATES))
        return self.rows(
            f"state IN ({marks}) AND next_attempt_at <= ?",
            [*(s.value for s in ACTIVE_STATES), now],
            order="next_attempt_at, id",
            limit=limit,
        )

    def next_due(
        self, states: Iterable[RecordingState] = ACTIVE_STATES, *, besides: Collection[int] = ()
    ) -> float | None:
        """When the next of these rows is due, the ids `besides` (in flight) left out."""
        names = [s.value for s in states]
        marks = ",".join("?" * len(names))
        skip = ",".join("?" * len(besides))
        (value,) = self.conn.execute(
            f"SELECT min(next_attempt_at) FROM recordings WHERE state IN ({marks})"
            f" AND id NOT IN ({skip})",
            [*names, *besides],
        ).fetchone()
        return None if value is None else float(value)

    def in_spool(
        self, *, shipped_before: float | None = None, oldest: str = "uploaded_at", page: int = 500
    ) -> Iterator[Row]:
        """Shipped recordings whose original retention has not taken out of the spool and
        no hold covers: those shipped before `shipped_before` (None: any), by `oldest`
        ("uploaded_at" or "mtime_ns"). A page at a time, each after the last row seen:
        the pass writes between its reads, and years of rows need not be in memory."""
        if oldest not in ("uploaded_at", "mtime_ns"):  # a column name in the SQL text
            raise ValueError(f"not an order: {oldest!r}")
        where = (
            "state = ? AND spool_removed_at IS NULL AND remote_path IS NOT NULL"
            f" AND sha256 IS NOT NULL AND shipped_size IS NOT NULL AND NOT {holds.HELD}"
        )
        params: list[Any] = [RecordingState.DONE.value]
        if shipped_before is not None:
            where += " AND uploaded_at <= ?"
            params.append(shipped_before)
        after: list[Any] = []
        while True:
            rows = self.rows(
                where + (f" AND ({oldest}, id) > (?, ?)" if after else ""),
                params + after,
                order=f"{oldest}, id",
                limit=page,
            )
            yield from rows
            if len(rows) < page:
                return
            after = [getattr(rows[-1], oldest), rows[-1].id]

    def spool_bytes_removed(self) -> tuple[int, int]:
        """(recordings, bytes) retention took out of the spool, for status and metrics."""
        count, size = self.conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM recordings"
            " WHERE spool_removed_at IS NOT NULL"
        ).fetchone()
        return int(count), int(size)

    def meta(self, key: str) -> str | None:
        found = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if found is None else str(found[0])

    # --- transitions ------------------------------------------------------------------

    def set_meta(self, key: str, value: str, *, now: float) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            conn.event(None, now, "meta", key)

    def add(
        self,
        *,
        stem: str,
        path: str,
        identity: Identity,
        now: float,
        state: RecordingState = RecordingState.PENDING,
        reason: str | None = None,
    ) -> int:
        """A newly seen file: pending and due now, or born skipped/quarantined with a reason."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO recordings (stem, path, size, mtime_ns, inode, state, reason,"
                " next_attempt_at, seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stem,
                    path,
                    identity.size,
                    identity.mtime_ns,
                    identity.inode,
                    state.value,
                    reason,
                    now,
                    now,
                    now,
                ),
            )
            rid = int(cursor.lastrowid or 0)
            conn.event(rid, now, state.value, reason or path)
        return rid

    def reopen(self, rid: int, *, path: str, identity: Identity, now: float, why: str) -> None:
        """The file changed (grew, was replaced, got a new version): settle it again now."""
        self._set(
            rid,
            now,
            "reopened",
            why,
            path=path,
            size=identity.size,
            mtime_ns=identity.mtime_ns,
            inode=identity.inode,
            state=RecordingState.PENDING.value,
            reason=None,
            attempts=0,
            next_attempt_at=now,
        )

    def replace_file(self, rid: int, *, path: str, identity: Identity, now: float) -> None:
        """An admin's script swapped the file for another format (.wav -> .mp3): same
        recording, new version; a shipped copy keeps its name with the new extension and
        the old file is deleted at the destination once the new one is there."""
        row = self.get(rid)
        assert row is not None
        values: dict[str, Any] = {}
        if row.remote_path is not None:
            new_remote = f"{row.remote_path.rsplit('.', 1)[0]}.{path.rsplit('.', 1)[1]}"
            if new_remote != row.remote_path:
                # The first obsolete name is the one that may be at the destination.
                obsolete = row.obsolete_remote or row.remote_path
                values = {"remote_path": new_remote, "obsolete_remote": obsolete}
        self._set(
            rid,
            now,
            "replaced",
            path,
            path=path,
            size=identity.size,
            mtime_ns=identity.mtime_ns,
            inode=identity.inode,
            format=None,
            kind=None,
            state=RecordingState.PENDING.value,
            reason=None,
            attempts=0,
            next_attempt_at=now,
            **values,
        )

    def clear_obsolete(self, rid: int, now: float) -> None:
        self._set(rid, now, "obsolete-removed", None, obsolete_remote=None)

    def defer(self, rid: int, *, until: float, reason: str, now: float) -> None:
        """Still pending: look again at `until` (or sooner, on an event)."""
        self.conn.execute(
            "UPDATE recordings SET next_attempt_at = ?, reason = ?, updated_at = ? WHERE id = ?",
            (until, reason, now, rid),
        )

    def wake(self, rid: int, now: float) -> None:
        """An event says this pending file may be ready: make it due now."""
        self.conn.execute(
            "UPDATE recordings SET next_attempt_at = ? WHERE id = ? AND state = ?",
            (now, rid, RecordingState.PENDING.value),
        )

    def skip(self, rid: int, *, reason: str, now: float) -> None:
        self._set(rid, now, "skipped", reason, state=RecordingState.SKIPPED.value, reason=reason)

    def quarantine(self, rid: int, *, reason: str, now: float) -> None:
        self._set(
            rid, now, "quarantined", reason, state=RecordingState.QUARANTINED.value, reason=reason
        )

    def set_parsed(self, rid: int, recording: Recording, now: float) -> None:
        """What the file name says; no event row (the claim that follows has one)."""
        values = parsed_columns(recording) | {"settled_at": now, "updated_at": now}
        assignments = ", ".join(f"{name} = ?" for name in values)
        self.conn.execute(
            f"UPDATE recordings SET {assignments} WHERE id = ?", [*values.values(), rid]
        )

    def wait_cdr(self, rid: int, *, deadline: float, until: float, polls: int, now: float) -> None:
        """Finished, but its CDR row is not there yet: ask again at `until`; `polls` (how
        often it was asked) is kept in `attempts` until the wait ends."""
        self._set(
            rid,
            now,
            "waiting-cdr",
            None,
            state=RecordingState.WAITING_CDR.value,
            cdr_deadline=deadline,
            next_attempt_at=until,
            attempts=polls,
            reason="waiting for the CDR row",
        )

    def set_cdr(self, rid: int, info: CallInfo | None, now: float) -> None:
        """The CDR answered (`info`) or the wait is over (None: ships with cdr missing)."""
        values = _cdr_values(info) | {"attempts": 0}  # the polls; uploads count afresh
        self._set(rid, now, "cdr-found" if info else "cdr-missing", None, **values)

    def fill_cdr(
        self, rid: int, info: CallInfo, *, day: str, now: float, notify: bool = False
    ) -> None:
        """A late CDR row for a shipped recording: its day's manifest must be rewritten
        (and, with `notify`, the CRM told)."""
        with self._write() as conn:
            if notify:
                webhooks.enqueue(conn, rid, "recording.updated", now)
            values = _cdr_values(info) | {"updated_at": now}
            assignments = ", ".join(f"{name} = ?" for name in values)
            conn.execute(
                f"UPDATE recordings SET {assignments} WHERE id = ?", [*values.values(), rid]
            )
            days.mark_dirty(conn, day)
            conn.event(rid, now, "cdr-filled", day)

    def fix_remote_path(self, rid: int, candidates: Iterable[str], now: float) -> str:
        """Give the row the first free remote path of `candidates`, once; later calls keep it."""
        with self._write() as conn:
            return self._pick_remote(conn, rid, candidates, now)

    def _pick_remote(
        self, conn: Transaction, rid: int, candidates: Iterable[str], now: float
    ) -> str:
        (current,) = conn.execute(
            "SELECT remote_path FROM recordings WHERE id = ?", (rid,)
        ).fetchone()
        if current is not None:
            return str(current)
        for candidate in candidates:
            taken = conn.execute(
                "SELECT 1 FROM recordings WHERE remote_path = ?", (candidate,)
            ).fetchone()
            if not taken:
                conn.execute("UPDATE recordings SET remote_path = ? WHERE id = ?", (candidate, rid))
                conn.event(rid, now, "named", candidate)
                return candidate
        raise AgentError(f"no free remote path for recording {rid}")

    def claim(
        self,
        rid: int,
        *,
        identity: Identity,
        sha256: str,
        size: int,
        now: float,
        candidates: Iterable[str] = (),
        audio_seconds: float | None = None,
    ) -> str | None:
        """A staged copy is ready: the row is the uploader's until done, failed or released.
        With `candidates`, the remote path is fixed (once) in the same transaction; returns
        it. `audio_seconds`: how long the copy plays, when its audio says."""
        with self._write() as conn:
            remote = self._pick_remote(conn, rid, candidates, now) if candidates else None
            conn.execute(
                "UPDATE recordings SET state = ?, size = ?, mtime_ns = ?, inode = ?, sha256 = ?,"
                " shipped_size = ?, audio_seconds = ?, reason = NULL, updated_at = ? WHERE id = ?",
                (
                    RecordingState.UPLOADING.value,
                    identity.size,
                    identity.mtime_ns,
                    identity.inode,
                    sha256,
                    size,
                    audio_seconds,
                    now,
                    rid,
                ),
            )
            conn.event(rid, now, "uploading")
        return remote

    def mark_done(self, rid: int, *, day: str, now: float, notify: bool = False) -> None:
        """Verified at the destination; its day's manifest must be rewritten (and, with
        `notify`, the CRM told)."""
        with self._write() as conn:
            if notify:
                webhooks.enqueue(conn, rid, "recording.shipped", now)
            conn.execute(
                "UPDATE recordings SET state = ?, reason = NULL, attempts = 0, uploaded_at = ?,"
                " version = version + 1, updated_at = ?, spool_removed_at = NULL WHERE id = ?",
                (RecordingState.DONE.value, now, now, rid),
            )
            days.mark_dirty(conn, day)
            conn.event(rid, now, "done", day)

    def mark_failed(
        self, rid: int, *, error: str, retry_at: float, now: float, local: bool = False
    ) -> None:
        """Retried at `retry_at`; `local` when our own side failed (staging), which says
        nothing about the destination."""
        with self._write() as conn:
            conn.execute(
                "UPDATE recordings SET state = ?, reason = ?, attempts = attempts + 1,"
                " next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (RecordingState.FAILED.value, error, retry_at, now, rid),
            )
            conn.event(rid, now, "failed-staging" if local else "failed", error)

    def spool_removed(self, rid: int, *, event: str, detail: str, now: float) -> None:
        """Retention took the original out of the spool (`event`: spool-deleted,
        spool-moved, or spool-absent for one found gone): the audit trail's entry."""
        self._set(rid, now, event, detail, spool_removed_at=now)

    def spool_restored(self, rid: int, *, identity: Identity, now: float) -> None:
        """An original retention took out is back in the spool, unchanged (size, mtime)."""
        self._set(rid, now, "spool-restored", None, spool_removed_at=None, inode=identity.inode)

    def expire(self, rids: Iterable[int], *, day: str, reason: str, now: float) -> None:
        """Destination retention: these recordings of `day` leave the destination and
        are never shipped again; the day's manifest and page are rewritten without them.
        Their files are removed after this (`remote_removed`)."""
        with self._write() as conn:
            for rid in rids:
                conn.execute(
                    "UPDATE recordings SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                    (RecordingState.EXPIRED.value, reason, now, rid),
                )
                conn.event(rid, now, "expired", reason)
            days.mark_dirty(conn, day)

    def remote_removed(self, rid: int, *, now: float) -> None:
        self._set(rid, now, "remote-removed", None, remote_removed_at=now)

    def expiring(self) -> list[Row]:
        """Expired rows whose files may still be at the destination (a pass was cut)."""
        return self.rows(
            "state = ? AND remote_removed_at IS NULL AND remote_path IS NOT NULL",
            [RecordingState.EXPIRED.value],
        )

    def requeue(self, rid: int, *, reason: str, now: float) -> None:
        """The remote copy is missing or differs: ship the original again (to the same
        remote path, fixed once), now."""
        self._set(
            rid,
            now,
            "requeued",
            reason,
            state=RecordingState.PENDING.value,
            reason=reason,
            attempts=0,
            next_attempt_at=now,
        )

    def release(self, rid: int, *, why: str, now: float) -> None:
        """Give a claimed row back untouched (agent stopping, destination paused)."""
        self._set(
            rid, now, "released", why, state=RecordingState.PENDING.value, next_attempt_at=now
        )

    def recover(self, now: float) -> list[Row]:
        """At start-up: rows a crash left `uploading` go back to pending. Returns them."""
        stranded = self.rows("state = ?", [RecordingState.UPLOADING.value])
        for row in stranded:
            self.release(row.id, why="recovered after an unclean stop", now=now)
        return stranded

    def retry(
        self, *, ids: Iterable[int] = (), states: Iterable[RecordingState] = (), now: float
    ) -> int:
        """Make failed or quarantined rows pending again, re-parsed (a pattern may be new)."""
        wanted_ids, wanted_states = set(ids), {s.value for s in states}
        clear = ", ".join(f"{name} = NULL" for name in _PARSED)
        with self._write() as conn:
            # Chosen under the write lock: a row the agent shipped (or failed) while this
            # waited for it is judged as it is now, never reopened from a stale read.
            targets = [
                row.id
                for row in self.rows(
                    "state IN (?, ?)",
                    [RecordingState.FAILED.value, RecordingState.QUARANTINED.value],
                )
                if row.id in wanted_ids or row.state in wanted_states
            ]
            for rid in targets:
                conn.execute(
                    f"UPDATE recordings SET state = ?, reason = NULL, attempts = 0,"
                    f" next_attempt_at = ?, updated_at = ?, {clear} WHERE id = ?",
                    (RecordingState.PENDING.value, now, now, rid),
                )
                conn.event(rid, now, "retry")
        return len(targets)

    def restore(self, rows: list[dict[str, Any]], *, day: str | None, now: float) -> None:
        """`state rebuild`: one day's shipped recordings read back from its manifest, as
        done rows (column -> value), and the day as published, in one transaction (day
        None: the expired recordings of the destination's ledger, no day)."""
        with self._write() as conn:
            for values in rows:
                if unknown := values.keys() - _ROW_FIELDS:  # names go into the SQL text
                    raise ValueError(f"not columns: {sorted(unknown)}")
                cursor = conn.execute(
                    f"INSERT INTO recordings ({', '.join(values)})"
                    f" VALUES ({', '.join('?' * len(values))})",
                    list(values.values()),
                )
                conn.event(int(cursor.lastrowid or 0), now, "restored", day or "expired")
            if day is not None:
                days.set_count(conn, day, len(rows))

    def prune(self, before: float, *, now: float) -> int:
        """Housekeeping: drop history older than `before` (events, settled webhooks) so
        the database stays bounded; recordings themselves are kept, and so is the audit
        trail of what retention removed and of the holds."""
        with self._write() as conn:
            marks = ",".join("?" * len(AUDIT_EVENTS))
            events = conn.execute(
                f"DELETE FROM events WHERE at < ? AND event NOT IN ({marks})",
                (before, *AUDIT_EVENTS),
            ).rowcount
            hooks = webhooks.prune(conn, before)
            conn.event(None, now, "pruned", f"{events} events, {hooks} webhooks")
        return int(events) + hooks
