"""Whether the other destinations have a recording, for the spool's retention: an
original leaves the spool only when every destination has it, and each copy was read
again in the same pass (DESIGN.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from agent.backfill import SKIPPED_FOR_AGE
from agent.config import DestinationConfig
from agent.errors import DestinationDown, PermanentError, TransientError
from agent.model import RecordingState
from agent.roles.retention import Recheck, mismatch
from agent.store.state import Row, StateDatabaseError, Store
from agent.transport import Transport, open_transport


class Elsewhere:
    """The other destinations' state databases, opened read-only when first asked (a
    destination added since the agent started has none until its agent opens it), and,
    for those in `destinations`, a connection of its own to each (opened when first
    needed, used on the retention's thread only: never the destination's agent's)."""

    def __init__(
        self,
        states: Mapping[str, Path],
        *,
        destinations: Mapping[str, DestinationConfig] | None = None,
        connect: Callable[[DestinationConfig], Transport] = open_transport,
    ) -> None:
        self.states = dict(states)
        self.destinations = dict(destinations or {})
        self.connect = connect
        # Destination name -> how to wake its agent (a copy re-queued there ships now).
        self.wake: dict[str, Callable[[], None]] = {}
        self._stores: dict[str, Store] = {}
        self._transports: dict[str, Transport] = {}

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

    def recheck(self, row: Row, now: float) -> Recheck | None:
        """Read again the copy at each other destination that has the recording done (one
        that does not want it has none), as the spool's own destination's copy was read.
        None: each checks out. A copy missing or different is re-queued at its destination
        (its agent ships it again) and the original stays. DestinationDown or
        TransientError, naming the destination, when one cannot answer: the pass ends."""
        for name, config in self.destinations.items():
            store = self._store(name, self.states[name])
            other = None if store is None else store.by_stem(row.stem)
            if other is None or other.state != RecordingState.DONE.value:
                continue  # missing(), asked before and after, keeps what it must
            assert other.remote_path is not None
            transport = self._transport(name, config)
            try:
                remote = transport.stat_remote(other.remote_path)
                if remote is None:  # only a destination that answers may say a copy is gone
                    transport.probe()
            except DestinationDown as exc:
                raise DestinationDown(f"destination {name}: {exc}") from exc
            except TransientError as exc:
                raise TransientError(f"destination {name}: {exc}") from exc
            except PermanentError:
                return Recheck(f"unverifiable at destination {name}", requeued=False)
            problem = mismatch(other, remote)
            if problem is not None:
                self._requeue(name, other.id, problem, now)
                return Recheck(f"at destination {name}: {problem}", requeued=True)
        return None

    def _requeue(self, name: str, rid: int, reason: str, now: float) -> None:
        store = Store.open(self.states[name], create=False)  # its agent's, a moment
        try:
            store.requeue(rid, reason=reason, now=now)
        finally:
            store.close()
        if (wake := self.wake.get(name)) is not None:
            wake()

    def _store(self, name: str, path: Path) -> Store | None:
        if name not in self._stores:
            try:
                self._stores[name] = Store.open_readonly(path)
            except StateDatabaseError:
                return None  # not created yet: it has nothing
        return self._stores[name]

    def _transport(self, name: str, config: DestinationConfig) -> Transport:
        if name not in self._transports:
            self._transports[name] = self.connect(config)
        return self._transports[name]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
