"""Multipart uploads in flight, in the state database: the S3 destination notes each
upload id and each finished part here, so a crash resumes the upload without sending
the finished parts again. Its own connection: parts finish in upload threads."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from agent.model import Part, PartUpload
from agent.store.tx import transaction

BUSY_TIMEOUT_S = 10.0


class UploadLedger:
    def __init__(self, path: Path) -> None:
        """`path`: the state database, already made and migrated by `Store.open`."""
        self.conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.lock = threading.Lock()

    def uploads(self, key: str | None = None) -> list[PartUpload]:
        """Every upload noted (of `key` only, when given), with its finished parts."""
        where, params = ("WHERE key = ?", (key,)) if key is not None else ("", ())
        with self.lock:
            heads = self.conn.execute(
                "SELECT upload_id, key, sha256, part_size, started_at FROM multipart_uploads"
                f" {where} ORDER BY started_at",
                params,
            ).fetchall()
            uploads = []
            for upload_id, key_, sha256, size, started in heads:
                parts = self.conn.execute(
                    "SELECT number, etag, sha256 FROM multipart_parts WHERE upload_id = ?",
                    (upload_id,),
                ).fetchall()
                found = {number: Part(number, etag, sha) for number, etag, sha in parts}
                uploads.append(PartUpload(upload_id, key_, sha256, size, started, found))
        return uploads

    def begin(self, upload: PartUpload) -> None:
        with self.lock, transaction(self.conn) as tx:
            tx.execute(
                "INSERT INTO multipart_uploads (upload_id, key, sha256, part_size, started_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (upload.upload_id, upload.key, upload.sha256, upload.part_size, upload.started_at),
            )
            tx.event(None, time.time(), "multipart-started", f"{upload.key} {upload.upload_id}")

    def part_done(self, upload_id: str, part: Part) -> None:
        with self.lock, transaction(self.conn) as tx:
            tx.execute(
                "INSERT OR REPLACE INTO multipart_parts (upload_id, number, etag, sha256)"
                " VALUES (?, ?, ?, ?)",
                (upload_id, part.number, part.etag, part.sha256),
            )
            tx.event(None, time.time(), "multipart-part", f"{upload_id} {part.number}")

    def forget(self, upload_id: str, why: str) -> None:
        """The upload was completed or aborted: nothing of it is left to resume."""
        with self.lock, transaction(self.conn) as tx:
            tx.execute("DELETE FROM multipart_uploads WHERE upload_id = ?", (upload_id,))
            tx.event(None, time.time(), f"multipart-{why}", upload_id)

    def close(self) -> None:
        with self.lock:
            self.conn.close()
