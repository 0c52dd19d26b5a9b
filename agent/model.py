"""Plain values shared by every layer: a parsed recording, call info, the state enum."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RecordingState(enum.StrEnum):
    """A recording's state; the values are what the database and the CLI show."""

    PENDING = "pending"
    WAITING_CDR = "waiting_cdr"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"
    EXPIRED = "expired"  # removed at the destination by destination retention; never shipped again


@dataclass(frozen=True, kw_only=True)
class Recording:
    """What a recording's file name says (DESIGN.md "Parsed recording")."""

    kind: str
    dst: str | None
    src: str | None
    started_at: datetime
    uniqueid: str | None
    extension: str | None
    era: str
    pattern: str
    format: str  # the file's extension as found on disk ("wav", "WAV", "gsm" ...)
    head: str | None = None  # raw dst-src text when dashes make the split ambiguous

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))  # plain values: asdict's deep copy costs ~5 % of a backlog
        data["started_at"] = self.started_at.isoformat()
        return data


@dataclass(frozen=True, kw_only=True)
class CallInfo:
    """What the CDR says about a call; None where the CDR has no value."""

    caller_number: str | None = None
    caller_name: str | None = None
    dst: str | None = None
    did: str | None = None
    linkedid: str | None = None
    duration: int | None = None
    billsec: int | None = None
    disposition: str | None = None


@dataclass(frozen=True)
class Identity:
    """Size, mtime and inode: a file counts as changed when any of them differs."""

    size: int
    mtime_ns: int
    inode: int


def identity_of(st: os.stat_result) -> Identity:
    return Identity(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class Part:
    """One finished part of a multipart upload to object storage."""

    number: int
    etag: str
    sha256: str  # base64


@dataclass(frozen=True)
class PartUpload:
    """A multipart upload begun: what a crash resumes (agent.store.uploads keeps them)."""

    upload_id: str
    key: str
    sha256: str
    part_size: int
    started_at: float
    parts: dict[int, Part] = field(default_factory=dict)
