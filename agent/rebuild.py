"""`recsync state rebuild`: a new state database from the destination's day manifests and
the spool, for when the old one is damaged or lost.

Every manifest entry becomes a done row (with the spool file's identity when the original
is still there, so it is not shipped again). Recordings in the spool but in no manifest
are left to the agent: its start-up scan ships them like new ones. The new database is
built beside the old one and only takes its place once it is complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import spoolnames
from agent.config import Config
from agent.errors import AgentError, PermanentError, UnparseableName
from agent.forget import remote_ledger
from agent.log import kv
from agent.model import RecordingState
from agent.publish import expired
from agent.secrets import give_to_folder_owner
from agent.store.state import StateDatabaseError, Store, parsed_columns
from agent.transport import Transport, check_remote

log = logging.getLogger(__name__)

_YEAR, _TWO_DIGITS = re.compile(r"\d{4}"), re.compile(r"\d{2}")
_SIDE_FILES = ("-wal", "-shm")


@dataclass
class Rebuilt:
    """What a rebuild found, for the admin."""

    days: int = 0
    restored: int = 0
    in_spool: int = 0  # restored recordings whose original is still in the spool
    dropped: int = 0  # entries that are not usable (malformed, duplicates)
    unreadable: list[str] = field(default_factory=list)  # days whose manifest is unusable
    expired: int = 0  # from the destination's ledger: never shipped again
    kept: Path | None = None  # where the old database went


def damage(path: Path) -> str | None:
    """Why the database at `path` cannot be used, or None when it is healthy."""
    try:
        Store.open(path, create=False).close()
    except StateDatabaseError as exc:
        return str(exc)
    return None


def rebuild(config: Config, transport: Transport, *, force: bool, now: float) -> Rebuilt:
    """Replace the state database with one rebuilt from `transport`'s manifests. The
    caller holds the agent's lock. A healthy database is kept unless `force`."""
    path = config.state.path
    if path.exists() and not force and damage(path) is None:
        raise AgentError(
            f"state database {path} is healthy; `recsync state rebuild --force` replaces it"
        )
    fresh = path.with_name(path.name + ".rebuild")
    _remove_database(fresh)  # a rebuild that died half-way
    store = Store.open(fresh)
    try:
        report = _restore_all(store, transport, config, now)
    finally:
        store.close()
    report.kept = _move_aside(path, now)
    os.replace(fresh, path)
    give_to_folder_owner(path)  # run as root, the service user must still write it
    return report


def remote_days(transport: Transport) -> list[str]:
    """The `YYYY/MM/DD` folders at the destination."""
    return [
        f"{year}/{month}/{day}"
        for year in transport.listdir()
        if _YEAR.fullmatch(year)
        for month in transport.listdir(year)
        if _TWO_DIGITS.fullmatch(month)
        for day in transport.listdir(f"{year}/{month}")
        if _TWO_DIGITS.fullmatch(day)
    ]


def _restore_all(store: Store, transport: Transport, config: Config, now: float) -> Rebuilt:
    report = Rebuilt()
    stems: set[str] = set()
    # The ledger wins over a manifest a cut pass did not rewrite: those files are gone.
    gone = {str(entry.get("file")) for entry in expired.read_all(transport)}
    ledger = remote_ledger(transport)  # `recsync forget`: never restored, never shipped
    store.erasure.restore(ledger, now=now)
    erased = {str(u) for entry in ledger for u in entry["uniqueids"]}
    for day in remote_days(transport):
        data = transport.read_bytes(f"{day}/manifest.json")
        if data is None:
            continue  # files without a manifest: the agent names and ships them again
        try:
            document = json.loads(data)
            entries = document["recordings"]
            uploaded_at = datetime.fromisoformat(document["generated_at"]).timestamp()
            if not isinstance(entries, list):
                raise TypeError("recordings is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(kv("rebuild-unreadable", day=day, error=str(exc)))
            report.unreadable.append(day)
            continue
        rows = []
        for entry in entries:
            row = _row(entry, day, config, uploaded_at=uploaded_at, now=now)
            if row is not None and (row["remote_path"] in gone or row["uniqueid"] in erased):
                continue
            if row is None or row["stem"] in stems:
                report.dropped += 1
                continue
            stems.add(row["stem"])
            report.in_spool += row["inode"] != 0
            rows.append(row)
        store.restore(rows, day=day, now=now)
        report.days += 1
        report.restored += len(rows)
    report.expired = _restore_expired(store, transport, config, stems, now)
    report.expired += _restore_erased(store, config, erased, stems, now)
    return report


def _restore_erased(
    store: Store, config: Config, erased: set[str], stems: set[str], now: float
) -> int:
    """Originals of erased calls still in the spool, as expired rows: the agent's start-up
    scan then knows them and never ships them again."""
    if not erased:
        return 0
    from agent.backfill import spool_files

    rows = []
    for rel in spool_files(config.spool.path):
        stem = rel.rpartition(".")[0]
        parsed = _parsed(rel, config)
        if stem in stems or parsed.get("uniqueid") not in erased:
            continue
        stems.add(stem)
        rows.append(
            {
                "stem": stem,
                "path": rel,
                "state": RecordingState.EXPIRED.value,
                "reason": "erased on request (from the destination's ledger)",
                "seen_at": now,
                "updated_at": now,
            }
            | parsed
            | _identity(config.spool.path / rel, 0)
        )
    store.restore(rows, day=None, now=now)
    return len(rows)


def _restore_expired(
    store: Store, transport: Transport, config: Config, stems: set[str], now: float
) -> int:
    """The destination's ledger of expired recordings as expired rows: their originals,
    if still in the spool, are known and never shipped again."""
    rows = []
    for entry in expired.read_all(transport):
        try:
            original, remote = check_remote(entry["original"]), check_remote(entry["file"])
        except (KeyError, TypeError, PermanentError) as exc:
            log.warning(kv("rebuild-dropped", ledger="expired", error=str(exc)))
            continue
        stem = original.rpartition(".")[0] or original
        if stem in stems:
            continue
        stems.add(stem)
        row: dict[str, Any] = {
            "stem": stem,
            "path": original,
            "state": RecordingState.EXPIRED.value,
            "reason": "destination retention (from the destination's ledger)",
            "remote_path": remote,
            "uniqueid": entry.get("uniqueid"),
            "seen_at": now,
            "updated_at": now,
            "remote_removed_at": entry.get("expired_at") or now,
        }
        row |= _parsed(original, config) | _identity(config.spool.path / original, 0)
        rows.append(row)
    store.restore(rows, day=None, now=now)
    return len(rows)


def _row(
    entry: Any, day: str, config: Config, *, uploaded_at: float, now: float
) -> dict[str, Any] | None:
    """The done row of one manifest entry; None when the entry is not usable."""
    try:
        original, remote = check_remote(entry["original"]), check_remote(entry["file"])
        if not remote.startswith(f"{day}/"):
            raise PermanentError(f"{remote} is not in {day}")
        size, sha256 = int(entry["size"]), str(entry["sha256"])
    except (KeyError, TypeError, ValueError, PermanentError) as exc:
        log.warning(kv("rebuild-dropped", day=day, error=str(exc)))
        return None
    found = entry.get("cdr") == "found"
    row: dict[str, Any] = {
        "stem": original.rpartition(".")[0] or original,
        "path": original,
        "state": RecordingState.DONE.value,
        "remote_path": remote,
        "sha256": sha256,
        "shipped_size": size,
        "version": 1,
        "next_attempt_at": now,
        "seen_at": now,
        "settled_at": now,
        "uploaded_at": uploaded_at,
        "updated_at": now,
        "kind": entry.get("kind"),
        "uniqueid": entry.get("uniqueid"),
        "started_at": entry.get("started_at"),
        "linkedid": entry.get("linkedid"),
        "cdr": {"found": "found", "off": None}.get(entry.get("cdr"), "missing"),
        "audio_seconds": _number(entry.get("audio_seconds")),
    }
    if found:  # the entry's caller and dst are the CDR's; otherwise the name's
        row |= {
            "caller_number": entry.get("caller_number"),
            "caller_name": entry.get("caller_name"),
            "cdr_dst": entry.get("dst"),
            "did": entry.get("did"),
            "duration": entry.get("duration"),
            "billsec": entry.get("billsec"),
            "disposition": entry.get("disposition"),
        }
    row |= _parsed(original, config)
    row |= _identity(config.spool.path / original, size)
    return row


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def _parsed(original: str, config: Config) -> dict[str, Any]:
    """What the file name says, as the pipeline stores it."""
    try:
        recording = spoolnames.parse(
            original.rsplit("/", 1)[-1],
            extensions=config.spool.extensions,
            patterns=config.spool.patterns,
        )
    except UnparseableName:
        return {}
    return parsed_columns(recording)


def _identity(path: Path, size: int) -> dict[str, Any]:
    """The spool file's identity, so the start-up scan sees it as shipped; zeros (which
    no file has) when the original is gone from the spool."""
    try:
        st = os.lstat(path)
    except OSError:
        return {"size": size, "mtime_ns": 0, "inode": 0}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _move_aside(path: Path, now: float) -> Path | None:
    """Rename the old database (and its WAL files) to `<name>.damaged-<UTC time>`."""
    if not path.exists():
        return None
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", *_SIDE_FILES):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, f"{kept}{suffix}")
    return kept


def _remove_database(path: Path) -> None:
    for suffix in ("", *_SIDE_FILES):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
