"""The destination's health: probe, pause and resume, the owner check, status.json."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from agent.config import RESERVED_SITES, SITE_NAME
from agent.errors import AgentError, DestinationDown, PermanentError, TransientError
from agent.log import kv
from agent.store.state import Store
from agent.transport import Transport

log = logging.getLogger(__name__)

PROBE_SECONDS = 30  # how often a paused destination is tried again
STATUS_FILE = "status.json"
UNSWEPT = "unswept"  # meta key: folders of writes cut short, swept once the server answers


class Destination:
    """Whether shipping may go on now. A fault of the whole destination pauses it (the
    recordings stay queued); a probe every PROBE_SECONDS resumes it once it answers."""

    def __init__(
        self,
        *,
        transport: Transport,
        store: Store,
        summary: Callable[[float], dict[str, Any]],
        on_state: Callable[[str], None] = lambda state: None,
        host: str | None = None,
        site: str | None = None,
        root: Transport | None = None,
    ) -> None:
        self.transport = transport
        self.host = host or socket.gethostname()  # what status.json's "host" says of us
        self.site = site  # the folder of a shared root this agent owns; None: the root
        self.root = root  # the whole shared root (the site's transport is its folder)
        self.store = store
        self.summary = summary  # the status document, as `status --json` shows it
        self.on_state = on_state  # the metrics gauge
        self.paused_until: float | None = None
        self.paused_reason: str | None = None
        self.owner_checked = False
        self._unswept: set[str] = set()
        self._answering = False  # the last upload or probe went through
        self._cut: set[str] = set()  # folders of writes cut short, not swept yet
        self._recorded: str | None = None  # the health record last written

    @property
    def paused(self) -> bool:
        return self.paused_until is not None

    def sweep_later(self, folders: Iterable[str]) -> None:
        """Folders where a crash may have left temporaries; swept once the destination answers."""
        self._unswept |= set(folders)

    def cut_short(self, folders: Iterable[str], now: float) -> None:
        """A write failed midway (the server went away with the connection, so its
        temporary is still there): its folders are swept once the destination answers
        again, between passes, and remembered until then (a restart sweeps them too)."""
        new = set(folders) - self._cut
        if new:
            self._cut |= new
            self._unswept |= new
            self.store.set_meta(UNSWEPT, json.dumps(sorted(self._cut)), now=now)

    def cut_folders(self) -> list[str]:
        """The folders `cut_short` remembered, of this run or an earlier one."""
        raw = self.store.meta(UNSWEPT)
        self._cut |= set(json.loads(raw)) if raw else set()
        return sorted(self._cut)

    def ready(self, now: float) -> bool:
        """May shipping go on at `now`? A paused destination is probed when its time comes.
        Between passes (no transfer in flight), folders a failed transfer may have left a
        temporary in are swept once the destination answers again."""
        if self.paused_until is None:
            if self._unswept and self._answering:
                self._sweep(now)
            return self.paused_until is None
        return now >= self.paused_until and self.probe(now)

    def _sweep(self, now: float) -> None:
        try:
            self._swept(now)
        except DestinationDown as exc:
            self.pause(str(exc), now)
        except TransientError as exc:  # gone again: the next pass after an upload tries
            self._answering = False
            log.warning(kv("sweep-failed", error=str(exc)))

    def probe(self, now: float) -> bool:
        """Is the destination there? Paused when it refuses; a transient fault (server
        down) is left to the uploads' own retries."""
        try:
            self.transport.probe()
            self._swept(now)
        except DestinationDown as exc:
            self.pause(str(exc), now)
            return False
        except TransientError as exc:
            log.warning(kv("destination-unreachable", reason=str(exc)))
            self.record("failing", str(exc), now=now)
            return True
        if not self.owner_checked:
            self._check_owner(now)
        self.paused_until = self.paused_reason = None
        self.record("ok", now=now)
        return True

    def _swept(self, now: float) -> None:
        if self._unswept:
            self.transport.sweep(sorted(self._unswept))
            self._unswept = set()
        if self._cut:
            self._cut = set()
            self.store.set_meta(UNSWEPT, "[]", now=now)

    def pause(self, reason: str, now: float) -> None:
        if self.paused_until is None:
            log.error(kv("destination-paused", reason=reason))
        self.paused_until, self.paused_reason = now + PROBE_SECONDS, reason
        self.record("paused", reason, now=now)

    def record(self, state: str, reason: str | None = None, *, now: float) -> None:
        """What `status` shows of the destination: ok, failing or paused, with why."""
        self._answering = state == "ok"
        self.on_state(state)
        value = json.dumps({"state": state, "reason": reason})
        if self._recorded != value:  # written on change only, not once per file
            self.store.set_meta("destination", value, now=now)
            self._recorded = value

    def _check_owner(self, now: float) -> None:
        """One agent owns one root (or, in a shared root, one site folder: the transport
        is the folder's): another host's status.json there stops this one. A
        root without one is claimed by creating it where the destination can refuse an
        existing name (S3's If-None-Match: *), so of two agents starting at once one
        loses; elsewhere (and where a server ignores the condition) the read is the check."""
        self._check_root_is_shared()
        found, owner = self._read_owner()
        if not found and self.site is None:
            self._check_root_is_not_shared()
        create = self.transport.features.create_bytes
        if not found and create is not None and not create(STATUS_FILE, self._document(now)):
            _, owner = self._read_owner()  # another's claim won, or a retry found our own
        if owner and owner != self.host and self.site is not None:
            raise AgentError(
                f"the site {self.site!r} at the destination already belongs to the agent on"
                f" {owner!r} (its {self.site}/{STATUS_FILE}); one agent per site: set another"
                f" agent.site, or delete {self.site}/{STATUS_FILE} there if that agent is gone"
                " for good"
            )
        if owner and owner != self.host:
            raise AgentError(
                f"the destination root already belongs to the agent on {owner!r} (its"
                f" {STATUS_FILE}); one agent per root: choose another destination.root, or"
                f" delete {STATUS_FILE} there if that agent is gone for good"
            )
        self.owner_checked = True

    def _check_root_is_shared(self) -> None:
        """A root that one agent owns alone (its status.json at the root, layout "single")
        is not shared: a site there would be overwritten by its root page, and it ours."""
        if self.root is None:
            return
        data = self.root.read_bytes(STATUS_FILE)
        if data is not None:
            raise AgentError(
                f"the destination root belongs to one agent alone ({STATUS_FILE} at the root,"
                ' destination.layout = "single"); move its files under a site folder first'
                ' (README "Several PBXs into one root") or choose another destination.root'
            )

    def _check_root_is_not_shared(self) -> None:
        """A root of several sites (a site folder with its status.json) is not one agent's:
        claimed, its root page would be this agent's and the sites' pages lost from it."""
        for name in self.transport.listdir():
            if not SITE_NAME.fullmatch(name) or name.lower() in RESERVED_SITES:
                continue
            try:
                found = self.transport.read_bytes(f"{name}/{STATUS_FILE}") is not None
            except PermanentError:
                continue  # a file, not a folder
            if found:
                raise AgentError(
                    f"the destination root is shared by several sites ({name}/{STATUS_FILE}"
                    ' there); set destination.layout = "sites" and agent.site, or choose'
                    " another destination.root"
                )

    def _read_owner(self) -> tuple[bool, str | None]:
        """Whether status.json exists, and the host it names (None when it names none)."""
        data = self.transport.read_bytes(STATUS_FILE)
        if data is None:
            return False, None
        try:
            owner = json.loads(data).get("host")
        except (ValueError, AttributeError):
            owner = None  # not ours to judge: it is rewritten at the first publish
        return True, owner if isinstance(owner, str) else None

    def _document(self, now: float) -> bytes:
        return json.dumps(self.summary(now), indent=1).encode()

    def write_status(self, now: float) -> None:
        """status.json at the root: the agent's health, readable from the webserver alone."""
        if self.paused_until is not None or not self.owner_checked:
            return
        try:
            self.transport.write_bytes(STATUS_FILE, self._document(now))
        except (DestinationDown, TransientError) as exc:
            log.warning(kv("status-failed", error=str(exc)))

    def health(self) -> tuple[bool, str]:
        """For /healthz, from the metrics thread: plain attributes only, no database."""
        if self.paused_until is not None:
            return False, f"destination paused: {self.paused_reason}"
        return True, "ok"
