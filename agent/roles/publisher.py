"""When the day pages, manifests and status.json are rewritten, paced during a backlog;
in a shared root (destination.layout = "sites"), the root page listing every site too."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.config import IndexConfig
from agent.errors import DestinationDown, TransientError
from agent.log import kv
from agent.memory import release_free_memory
from agent.publish import sites
from agent.publish.site import publish_dirty
from agent.roles.destination import Destination
from agent.store.state import Store
from agent.transport import Transport, shared_root

log = logging.getLogger(__name__)

PUBLISH_SECONDS = 2  # during a long pass, manifests are rewritten at most this often,
PUBLISH_SHARE = 0.1  # and publishing (a busy day's page costs ~0.5 s) takes at most this


class Publisher:
    """Publishes the days that changed. `timer` measures how long publishing takes, for
    the pacing only: the times written anywhere are the pass's `now`."""

    def __init__(
        self,
        *,
        store: Store,
        transport: Transport,
        destination: Destination,
        pages: IndexConfig,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.transport = transport
        self.destination = destination
        self.pages = pages
        self.timer = timer
        # A shared root: this agent's site, and the whole root for the page listing them.
        shared = shared_root(transport)
        self.root: Transport | None = shared[0] if shared else None
        self.site: str | None = shared[1] if shared else None
        self._root_static = False  # the root's static files, once per process (all agents
        # write the same bytes; a newer release's land at its first heartbeat)
        self._published_at = float("-inf")
        self._took = 0.0

    def due(self) -> bool:
        """During a long pass or a steady stream of calls: has enough time gone by to
        show the progress again?"""
        return self.due_in() <= 0

    def due_in(self) -> float:
        """Seconds until `due()`."""
        gap = max(PUBLISH_SECONDS, self._took / PUBLISH_SHARE)
        return self._published_at + gap - self.timer()

    def publish(self, now: float) -> None:
        """Rewrite the changed days, then status.json; a refusing destination pauses, a
        transient fault leaves the days dirty for the next pass."""
        began = self.timer()
        try:
            if publish_dirty(self.store, self.transport, now, self.pages, site=self.site):
                self.destination.record("ok", now=now)  # it answers: cut writes are swept
                self.heartbeat(now)
                release_free_memory()  # a busy day's pages would otherwise stay in RSS
        except DestinationDown as exc:
            self.destination.pause(str(exc), now)
        except TransientError as exc:
            log.warning(kv("publish-failed", error=str(exc)))
            # A page or manifest cut midway leaves its temporary behind.
            self.destination.cut_short([*self.store.days.dirty(), "", "search"], now)
        finally:
            self._published_at = self.timer()
            self._took = self._published_at - began

    def heartbeat(self, now: float) -> None:
        """status.json, then (in a shared root) the root page from every site's: each
        agent's heartbeat refreshes what the page says of all of them."""
        self.destination.write_status(now)
        if self.root is None or not self.pages.enabled or not self.destination.owner_checked:
            return
        try:
            sites.publish(self.root, now, title=self.pages.title, static=not self._root_static)
            self._root_static = True
        except (DestinationDown, TransientError) as exc:  # the next heartbeat tries again
            log.warning(kv("root-page-failed", error=str(exc)))
