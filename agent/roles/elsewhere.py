"""Whether the other destinations have a recording, for the spool's retention: an
original leaves the spool only when every destination has it (DESIGN.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agent.backfill import SKIPPED_FOR_AGE
from agent.model import RecordingState
from agent.store.state import Row, StateDatabaseError, Store


class Elsewhere:
    """The other destinations' state databases, opened read-only when first asked (a
    destination added since the agent started has none until its agent opens it)."""

    def __init__(self, states: Mapping[str, Path]) -> None:
        self.states = dict(states)
        self._stores: dict[str, Store] = {}

    def missing(self, row: Row) -> str | None:
        """Why the original must stay for another destination; None: each has it, or
        does not want it (skipped for its age: `since`, or before its first start)."""
        for name, path in self.states.items():
            store = self._store(name, path)
            other = None if store is None else store.by_stem(row.stem)
            if other is None:
                return f"not yet at destination {name}"
            if other.state == RecordingState.EXPIRED.value:
                continue
            if other.state == RecordingState.SKIPPED.value and other.reason in SKIPPED_FOR_AGE:
                continue
            if other.state != RecordingState.DONE.value or other.identity != row.identity:
                return f"not yet at destination {name}"
        return None

    def _store(self, name: str, path: Path) -> Store | None:
        if name not in self._stores:
            try:
                self._stores[name] = Store.open_readonly(path)
            except StateDatabaseError:
                return None  # not created yet: it has nothing
        return self._stores[name]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
