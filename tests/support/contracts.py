"""Field sets DESIGN.md fixes, written out once for the tests that check them."""

# `status --json` and status.json share these names (DESIGN.md "Contracts").
STATUS_FIELDS = {
    "version",
    "host",
    "counts",
    "backlog",
    "oldest_pending_seconds",
    "last_upload_at",
    "last_error",
    "destination",
    "cdr",
    "retention",
    "generated_at",
}
