"""`recsync forget --number N`: every recording whose caller or destination number is N
removed at the destination (and, with `spool`, from the spool and move_to), the days'
manifests and pages rewritten without them, the CRM told (`recording.deleted`), and an
erasure ledger kept (in the state database and, as erasures.json, at the destination)
that backfill and `state rebuild` respect, so an erased call never comes back.

Held recordings are not erased: a legal hold is the one thing an erasure request does not
override; they are listed instead. Run again, a forget cut anywhere finishes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.store.holds import normalise
from agent.store.state import Store
from agent.testhooks import crash_point
from agent.transport import Transport

LEDGER = "erasures.json"


@dataclass
class Plan:
    digits: str
    erase: list[tuple[int, str | None, str, str]] = field(default_factory=list)
    held: list[tuple[int, str | None, str, str]] = field(default_factory=list)


def plan(store: Store, number: str) -> Plan:
    """What forgetting `number` would do; BadHold for a value without digits."""
    digits = normalise("number", number)
    return Plan(
        digits,
        erase=store.erasure.matching(digits, held=False),
        held=store.erasure.matching(digits, held=True),
    )


def forget(
    found: Plan,
    *,
    store: Store,
    transport: Transport,
    spool: Path | None,
    move_to: Path | None,
    notify: bool,
    now: float,
) -> int:
    """Erase what `found` lists; `spool`: the spool folder to remove the originals from
    (None: they stay). Returns how many recordings."""
    ids = [rid for rid, _, _, _ in found.erase]
    if not ids:
        return 0
    store.erasure.begin(ids, found.digits, notify=notify, now=now)
    crash_point("forget:begun")
    # Before any file goes: a state rebuild after a crash must already know the calls.
    transport.write_bytes(LEDGER, json.dumps({"erasures": store.erasure.ledger()}).encode())
    for _, remote, path, _ in found.erase:
        if remote is not None:
            transport.remove(remote)
            transport.remove(f"{remote}.json")  # its sidecar, if it has one
        if spool is not None:
            for folder in filter(None, (spool, move_to)):
                (folder / path).unlink(missing_ok=True)
    crash_point("forget:removed")
    store.erasure.scrub(ids, now=now)
    return len(ids)


def remote_ledger(transport: Transport) -> list[dict[str, Any]]:
    """The destination's copy of the ledger (state rebuild), its usable entries."""
    data = transport.read_bytes(LEDGER)
    entries = json.loads(data).get("erasures", []) if data else []
    return [
        e
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("uniqueids"), list)
        and isinstance(e.get("number_sha256"), str)
        and isinstance(e.get("at"), int | float)
    ]
