"""CDR rows as every backend reads them, and how a call's rows become one CallInfo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from agent.cdr import split_clid
from agent.model import CallInfo


@dataclass(frozen=True, kw_only=True)
class CdrRow:
    """One CDR row; a column the store lacks is None."""

    calldate: datetime | None = None  # naive, the PBX's local time
    clid: str | None = None
    src: str | None = None
    dst: str | None = None
    cnum: str | None = None
    cnam: str | None = None
    did: str | None = None
    uniqueid: str | None = None
    linkedid: str | None = None
    recordingfile: str | None = None
    disposition: str | None = None
    duration: int | None = None
    billsec: int | None = None
    sequence: int | None = None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CdrRow))


def by_time(row: CdrRow) -> tuple[datetime, int]:
    """Earliest first: calldate, then the sequence counter."""
    return (row.calldate or datetime.max, row.sequence or 0)


def call_info(matched: Sequence[CdrRow], group: Sequence[CdrRow]) -> CallInfo:
    """One call from its rows, as FreePBX's own reports read them.

    `matched`: the rows that name this recording (by recordingfile or uniqueid), best
    first; `group`: every leg of the call (same linkedid), `matched` included. Caller ID
    comes from the group's earliest row (calldate, sequence): cnum/cnam, else src and
    the clid. Destination, times and disposition come from the recording's own row.
    """
    own = matched[0]
    legs = sorted({*group, *matched}, key=by_time)
    first = legs[0]
    clid_name, clid_number = split_clid(first.clid)
    return CallInfo(
        caller_number=first.cnum or first.src or clid_number,
        caller_name=first.cnam or clid_name,
        dst=own.dst or None,
        did=next((leg.did for leg in legs if leg.did), None),
        linkedid=first.linkedid or own.linkedid or None,
        duration=own.duration,
        billsec=own.billsec,
        disposition=own.disposition or None,
    )
