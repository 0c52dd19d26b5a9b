"""Several destinations: one Agent per destination, each with its own state database and
its own loop on a thread of its own, so a destination that is down or slow never holds
up another. One process, one lock, one stop for all of them."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence

from agent import log as log_module
from agent.daemon import Agent
from agent.log import kv
from agent.roles.elsewhere import Elsewhere

log = logging.getLogger(__name__)


class Fleet:
    """The agents of a config's destinations, the first (the default) first: it runs on
    the calling thread (signals, systemd, metrics are its), removes originals from the
    spool once every other destination has them (each copy read again), and sends the
    webhook."""

    def __init__(self, agents: Sequence[Agent], *, elsewhere: Elsewhere | None = None) -> None:
        if not agents:
            raise ValueError("a fleet needs at least one agent")
        self.agents = list(agents)
        self.elsewhere = elsewhere
        if elsewhere is not None:
            self.primary.retention.elsewhere = elsewhere.missing
            self.primary.retention.recheck = elsewhere.recheck
            for agent in self.agents[1:]:  # a copy re-queued there ships at once
                elsewhere.wake[agent.config.destination.name] = agent.wakeup.ring
        self.errors: list[BaseException] = []

    @property
    def primary(self) -> Agent:
        return self.agents[0]

    def by_name(self) -> dict[str, Agent]:
        return {agent.config.destination.name: agent for agent in self.agents}

    def stop(self) -> None:
        """Safe from a signal handler: every agent's flag and wake-up."""
        for agent in self.agents:
            agent.stop()

    def run(self, *, once: bool) -> None:
        """Every agent's driver (`run_until_idle` or `run_forever`) at once, the first on
        this thread; one that fails stops the others, and its error is raised here."""
        threads = [
            threading.Thread(
                target=self._drive,
                args=(agent, once),
                name=f"recsync-{agent.config.destination.name}",
                daemon=True,
            )
            for agent in self.agents[1:]
        ]
        for thread in threads:
            thread.start()
        try:
            self._drive(self.primary, once)
        finally:
            for thread in threads:
                thread.join()
        if self.errors:
            raise self.errors[0]

    def _drive(self, agent: Agent, once: bool) -> None:
        name = agent.config.destination.name
        try:
            with contextlib.ExitStack() as tags:
                if len(self.agents) > 1:  # one destination: its lines read as they always did
                    tags.enter_context(log_module.destination(name))
                if once:
                    agent.run_until_idle()
                else:
                    agent.run_forever()
        except BaseException as exc:  # a dead loop must not leave the others shipping alone
            log.error(kv("agent-failed", destination=name, error=exc))
            self.errors.append(exc)
            self.stop()

    def paused(self) -> dict[str, str]:
        """Destination name -> why it is paused, for those that are."""
        return {
            name: agent.destination.paused_reason
            for name, agent in self.by_name().items()
            if agent.destination.paused_reason is not None
        }

    def close(self) -> None:
        for agent in self.agents:
            agent.close()
            agent.store.close()
        if (copies := self.primary.pipeline.copies) is not None:
            copies.close()
        if self.elsewhere is not None:
            self.elsewhere.close()
