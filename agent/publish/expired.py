"""The destination's ledger of expired recordings, `expired/YYYY-MM.json`: what
destination retention removed, kept at the destination so that `recsync state rebuild`
(which trusts the destination's manifests and the spool) does not ship them again."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from agent.transport import Transport

FOLDER = "expired"


def _month_file(day: str) -> str:
    year, month, _ = day.split("/")
    return f"{FOLDER}/{year}-{month}.json"


def _read(transport: Transport, remote: str) -> dict[str, dict[str, Any]]:
    data = transport.read_bytes(remote)
    if not data:
        return {}
    entries = json.loads(data).get("expired", [])
    return {str(e["file"]): e for e in entries if isinstance(e, dict) and "file" in e}


def record(transport: Transport, day: str, entries: Iterable[dict[str, Any]]) -> None:
    """Add `entries` ({file, original, uniqueid, expired_at}) to their month's ledger;
    idempotent, so a pass cut after it may write them again."""
    remote = _month_file(day)
    known = _read(transport, remote)
    known |= {str(e["file"]): e for e in entries}
    document = {"expired": sorted(known.values(), key=lambda e: str(e["file"]))}
    transport.write_bytes(remote, json.dumps(document, indent=0, sort_keys=True).encode())


def read_all(transport: Transport) -> list[dict[str, Any]]:
    """Every entry of every month's ledger (state rebuild)."""
    found: list[dict[str, Any]] = []
    for name in transport.listdir(FOLDER):
        if name.endswith(".json") and not name.startswith("."):
            found += _read(transport, f"{FOLDER}/{name}").values()
    return found
