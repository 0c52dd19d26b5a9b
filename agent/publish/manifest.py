"""Day manifests (`YYYY/MM/DD/manifest.json`), always rebuilt whole from the state database."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from agent.model import RecordingState
from agent.publish.index import link
from agent.store.state import Row, Store


def day_of(remote_path: str) -> str:
    """`2024/03/15/x.wav` -> `2024/03/15`."""
    return remote_path.rsplit("/", 1)[0]


def call_fields(row: Row) -> dict[str, Any]:
    """What is known of the call: the manifest entry without the shipped file's facts.
    CDR values win over the file name's; CDR fields are null until the CDR has the call."""
    return {
        "original": row.path,
        "uniqueid": row.uniqueid,
        "linkedid": row.linkedid,
        "kind": row.kind,
        "caller_number": row.caller_number or row.src,  # CDR values win over the name's
        "caller_name": row.caller_name,
        "dst": row.cdr_dst or row.dst,
        "did": row.did,
        "started_at": row.started_at,
        "duration": row.duration,
        "billsec": row.billsec,
        "disposition": row.disposition,
        # found | missing (looked for, not there within the wait) | off (no CDR source:
        # never looked for)
        "cdr": row.cdr or "off",
    }


def entry(row: Row, *, site: str | None = None) -> dict[str, Any]:
    """The DESIGN.md manifest entry of a shipped recording; with `site` (a shared root),
    which PBX's it is. `file` stays relative to the site's folder in both layouts."""
    assert row.remote_path is not None
    fields = call_fields(row)
    cdr = fields.pop("cdr")
    where = {} if site is None else {"site": site}
    return {
        **where,
        "file": row.remote_path,
        **fields,
        "size": row.shipped_size,
        "sha256": row.sha256,
        "format": row.remote_path.rsplit(".", 1)[-1].lower(),
        # how long the shipped copy plays, from its audio (null: unknown); the pages show
        # it for a call whose CDR has no duration
        "audio_seconds": None if row.audio_seconds is None else round(row.audio_seconds, 1),
        "cdr": cdr,
        # the call's row on its day page, relative to the root (README: "A link per call")
        "link": link(day_of(row.remote_path), row.uniqueid),
    }


def day_rows(store: Store, day: str) -> Iterator[Row]:
    return rows_between(store, f"{day}/", f"{day}0")


def rows_between(store: Store, low: str, high: str) -> Iterator[Row]:
    """The shipped recordings whose remote path is in [low, high): a day's, a month's,
    in day order and, within a day, the day page's order."""
    # A range on the unique remote_path index: cheap even with years of rows. The "+"
    # keeps SQLite from choosing the (state, ...) index, which would read every done row.
    return store.iter_rows(
        "+state = ? AND remote_path >= ? AND remote_path < ?",
        [RecordingState.DONE.value, low, high],
        order="substr(remote_path, 1, 10), started_at, id",
    )


def render(day: str, entries: Iterable[dict[str, Any]], now: float) -> bytes:
    """The manifest document, one recording per line: readable, and made by the C encoder
    (`indent` would take the pure-Python one: 5x slower, 6x the memory). `entries` is
    read once, as it comes: a busy day need not be in memory as objects."""
    head = json.dumps(
        {
            "date": day.replace("/", "-"),
            "generated_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        },
        ensure_ascii=False,
    )
    document = io.BytesIO()
    document.write(f'{head[:-1]}, "recordings": [\n'.encode())
    separator = ""
    for entry in entries:
        document.write(f"{separator}{json.dumps(entry, ensure_ascii=False)}".encode())
        separator = ",\n"
    document.write(b"\n]}\n")
    return document.getvalue()
