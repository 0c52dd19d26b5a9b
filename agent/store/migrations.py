"""Named schema migrations; each runs in one transaction together with its record."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("recsync")


@migrations(name="0001_initial")
def _initial(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE recordings (
            id INTEGER PRIMARY KEY,
            stem TEXT NOT NULL UNIQUE,      -- spool-relative path without extension
            path TEXT NOT NULL,             -- spool-relative path of the current file
            size INTEGER NOT NULL,          -- identity of the file last seen ...
            mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL,         -- ... or, once claimed, of the copy shipped
            state TEXT NOT NULL,
            reason TEXT,                    -- why skipped/quarantined/failed/waiting
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            kind TEXT, dst TEXT, src TEXT, started_at TEXT, uniqueid TEXT,
            extension TEXT, era TEXT, pattern TEXT, format TEXT, head TEXT,
            remote_path TEXT UNIQUE,        -- fixed once, before the first upload
            obsolete_remote TEXT,           -- an earlier format's file to delete once shipped
            version INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT,
            shipped_size INTEGER,
            seen_at REAL NOT NULL,
            settled_at REAL,
            uploaded_at REAL,
            updated_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX recordings_due ON recordings (state, next_attempt_at)")
    db.execute("CREATE INDEX recordings_uniqueid ON recordings (uniqueid)")
    db.execute("CREATE INDEX recordings_uploaded ON recordings (uploaded_at)")
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            recording_id INTEGER,
            event TEXT NOT NULL,
            detail TEXT
        )
        """
    )
    db.execute("CREATE INDEX events_recording ON events (recording_id)")
    # Days whose manifest must be rewritten: set in the transaction that marks a file done.
    db.execute("CREATE TABLE dirty_days (day TEXT PRIMARY KEY)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migrations(name="0002_cdr")
def _cdr(db: Database) -> None:
    # cdr: NULL (not asked yet), 'found' or 'missing' (shipped without; a sweep retries).
    for column in (
        "cdr TEXT",
        "cdr_deadline REAL",
        "caller_number TEXT",
        "caller_name TEXT",
        "cdr_dst TEXT",
        "did TEXT",
        "linkedid TEXT",
        "duration INTEGER",
        "billsec INTEGER",
        "disposition TEXT",
    ):
        db.execute(f"ALTER TABLE recordings ADD COLUMN {column}")
    db.execute("CREATE INDEX recordings_cdr ON recordings (cdr, uploaded_at)")


@migrations(name="0003_webhooks")
def _webhooks(db: Database) -> None:
    # The CRM outbox: written in the transaction that marks a recording done (or fills in
    # its CDR), so no event is lost; the body is built from the row when it is sent.
    db.execute(
        """
        CREATE TABLE webhooks (
            id INTEGER PRIMARY KEY,
            recording_id INTEGER NOT NULL,
            event TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, refused
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            created_at REAL NOT NULL,
            delivered_at REAL
        )
        """
    )
    db.execute("CREATE INDEX webhooks_due ON webhooks (state, next_attempt_at)")


@migrations(name="0004_days")
def _days(db: Database) -> None:
    # How many recordings each published day holds: the root page reads this small table
    # instead of counting a million rows at every publish.
    db.execute("CREATE TABLE days (day TEXT PRIMARY KEY, count INTEGER NOT NULL)")


@migrations(name="0005_path_index")
def _path_index(db: Database) -> None:
    # Reconcile looks rows up by spool path; without this a 100,000-file start-up scan
    # reads the whole table once per batch.
    db.execute("CREATE INDEX recordings_path ON recordings (path)")


@migrations(name="0006_events_by_name")
def _events_by_name(db: Database) -> None:
    # `status` asks for the newest event of a few kinds (the last error, the last upload
    # outcome); without this it reads all the history (30 days) when there is none.
    db.execute("CREATE INDEX events_event ON events (event, id)")


@migrations(name="0007_multipart")
def _multipart(db: Database) -> None:
    # Object-storage uploads in parts: the upload id and each finished part, so an upload
    # cut by a crash resumes without sending its parts again.
    db.execute(
        """
        CREATE TABLE multipart_uploads (
            upload_id TEXT PRIMARY KEY,
            key TEXT NOT NULL,
            sha256 TEXT NOT NULL,       -- of the whole file: a changed file starts over
            part_size INTEGER NOT NULL,
            started_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX multipart_uploads_key ON multipart_uploads (key)")
    db.execute(
        """
        CREATE TABLE multipart_parts (
            upload_id TEXT NOT NULL REFERENCES multipart_uploads ON DELETE CASCADE,
            number INTEGER NOT NULL,
            etag TEXT NOT NULL,
            sha256 TEXT NOT NULL,       -- base64, as CompleteMultipartUpload names it
            PRIMARY KEY (upload_id, number)
        )
        """
    )


@migrations(name="0008_retention")
def _retention(db: Database) -> None:
    # When a retention rule took the original out of the spool (deleted or moved to
    # retention.move_to) after its remote copy was checked again; NULL: still there.
    db.execute("ALTER TABLE recordings ADD COLUMN spool_removed_at REAL")
    # Retention looks for shipped originals still in the spool, oldest first.
    db.execute(
        "CREATE INDEX recordings_in_spool ON recordings (state, uploaded_at)"
        " WHERE spool_removed_at IS NULL"
    )
    # Legal holds: what no rule may delete. `value` is normalised: a number's digits, a
    # uniqueid as given, a day as YYYY-MM-DD.
    db.execute(
        """
        CREATE TABLE holds (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,             -- number, uniqueid, day
            value TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (kind, value)
        )
        """
    )


@migrations(name="0009_expiry")
def _expiry(db: Database) -> None:
    # An expired recording's files at the destination are removed after its row says
    # expired; NULL until they are, so a pass cut between the two finishes the removal.
    db.execute("ALTER TABLE recordings ADD COLUMN remote_removed_at REAL")


@migrations(name="0010_erasures")
def _erasures(db: Database) -> None:
    # `recsync forget`: who was erased (a hash of the number, never the number) and
    # which calls, so backfill and state rebuild never bring them back.
    db.execute(
        """
        CREATE TABLE erasures (
            id INTEGER PRIMARY KEY,
            number_sha256 TEXT NOT NULL,
            uniqueids TEXT NOT NULL,        -- JSON list
            at REAL NOT NULL
        )
        """
    )


@migrations(name="0011_day_search")
def _day_search(db: Database) -> None:
    # Each published day's lines of its month's search file (publish/search.py), so a
    # month file is put together from its days without reading the month's recordings.
    # NULL (a day published before, or rebuilt): made again from its rows when needed.
    db.execute("ALTER TABLE days ADD COLUMN search BLOB")  # UTF-8 JSON


@migrations(name="0012_audio_seconds")
def _audio_seconds(db: Database) -> None:
    # How long the shipped copy plays, read from the audio when it was prepared
    # (media/length.py): the pages show it for calls whose CDR has no duration. NULL for
    # copies shipped before, and for files whose length cannot be read.
    db.execute("ALTER TABLE recordings ADD COLUMN audio_seconds REAL")


@migrations(name="0013_search_per_day")
def _search_per_day(db: Database) -> None:
    # The search files are one a day now, written with the day's manifest (publish/
    # search.py): the days' stored parts of month files are no longer read.
    db.execute("ALTER TABLE days DROP COLUMN search")
