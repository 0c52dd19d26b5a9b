"""Each role of the agent driven alone, with made-up times."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AgentError, DestinationDown
from agent.roles.destination import PROBE_SECONDS, Destination
from agent.roles.publisher import PUBLISH_SECONDS, PUBLISH_SHARE, Publisher
from agent.store.state import Store
from agent.transport import Features
from agent.transport.local import LocalTransport
from agent.wakeup import Wakeup
from tests.conftest import Site
from tests.support.mixmonitor import write_recording

NAME = "2024/03/15/out-18005551234-1001-20240315-101502-1710497702.42.wav"


class FakeTransport:
    """A destination whose probe answers from a script; every call is counted."""

    features = Features()  # no create_bytes: the owner check is the read alone

    def __init__(self, probes: list[Exception | None], owner: str | None = None) -> None:
        self.probes = probes
        self.probed = 0
        self.swept: list[list[str]] = []
        self.owner = owner
        self.written: dict[str, bytes] = {}

    def probe(self) -> None:
        self.probed += 1
        outcome = self.probes.pop(0) if self.probes else None
        if outcome is not None:
            raise outcome

    def sweep(self, folders: list[str]) -> int:
        self.swept.append(list(folders))
        return 0

    def read_bytes(self, remote: str) -> bytes | None:
        return None if self.owner is None else json.dumps({"host": self.owner}).encode()

    def write_bytes(self, remote: str, data: bytes) -> None:
        self.written[remote] = data

    def listdir(self, folder: str = "") -> list[str]:
        return []  # a root without site folders (the owner check looks for them)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state.db")
    yield s
    s.close()


def destination(store: Store, transport: FakeTransport) -> Destination:
    return Destination(
        transport=transport,  # type: ignore[arg-type]
        store=store,
        summary=lambda now: {"host": "here", "generated_at": now},
    )


def recorded(store: Store) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(store.meta("destination") or "null")
    return value


def test_a_paused_destination_is_probed_only_when_its_time_comes(store: Store) -> None:
    transport = FakeTransport([DestinationDown("disk full"), None])
    dest = destination(store, transport)
    dest.sweep_later(["2024/03/15"])
    assert dest.ready(1000.0)  # not paused: no probe needed
    assert transport.probed == 0

    dest.pause("disk full", 1000.0)
    assert recorded(store) == {"state": "paused", "reason": "disk full"}
    assert not dest.ready(1000.0 + PROBE_SECONDS - 1)
    assert transport.probed == 0  # too early: not even asked

    assert not dest.ready(1000.0 + PROBE_SECONDS)  # asked, still full
    assert transport.probed == 1
    assert dest.paused_until == 1000.0 + 2 * PROBE_SECONDS
    assert transport.swept == []  # nothing is swept on a refusing destination

    assert dest.ready(1000.0 + 2 * PROBE_SECONDS)
    assert not dest.paused and dest.paused_reason is None
    assert transport.swept == [["2024/03/15"]]
    assert recorded(store) == {"state": "ok", "reason": None}
    assert dest.health() == (True, "ok")


def test_status_json_is_written_only_for_an_owned_root_that_answers(store: Store) -> None:
    transport = FakeTransport([DestinationDown("permission denied"), None])
    dest = destination(store, transport)
    dest.probe(50.0)
    dest.write_status(50.0)
    assert transport.written == {}  # paused: the owner was never checked
    assert dest.health() == (False, "destination paused: permission denied")
    dest.probe(80.0)
    dest.write_status(81.0)
    assert json.loads(transport.written["status.json"]) == {"host": "here", "generated_at": 81.0}


def test_another_hosts_root_is_refused(store: Store) -> None:
    dest = destination(store, FakeTransport([None], owner="other-pbx"))
    with pytest.raises(AgentError, match="already belongs to the agent on 'other-pbx'"):
        dest.probe(0.0)


class LostAnswerTransport(FakeTransport):
    """A create that landed but whose answer was lost: the retry is told "it exists"."""

    def __init__(self) -> None:
        super().__init__([])
        self.features = Features(create_bytes=self.create_bytes)  # type: ignore[misc]

    def create_bytes(self, remote: str, data: bytes) -> bool:
        self.written[remote] = data
        return False

    def read_bytes(self, remote: str) -> bytes | None:
        return self.written.get(remote)


def test_a_claim_refused_because_it_had_landed_is_ours(store: Store) -> None:
    transport = LostAnswerTransport()
    dest = Destination(
        transport=transport,  # type: ignore[arg-type]
        store=store,
        summary=lambda now: {"host": "here", "generated_at": now},
        host="here",
    )
    assert dest.probe(5.0) and dest.owner_checked
    assert json.loads(transport.written["status.json"]) == {"host": "here", "generated_at": 5.0}


def test_publishing_is_paced_by_what_it_costs(store: Store, tmp_path: Path) -> None:
    clock = [100.0]
    transport = LocalTransport(root=tmp_path / "dest")
    (tmp_path / "dest").mkdir()
    dest = destination(store, FakeTransport([]))
    publisher = Publisher(
        store=store,
        transport=transport,
        destination=dest,
        pages=_index_config(),
        timer=lambda: clock[0],
    )
    assert publisher.due()  # never published yet

    # Publishing that took 0.5 s is next due after 0.5 / PUBLISH_SHARE = 5 s, not 2 s.
    times = iter([100.0, 100.5])
    publisher.timer = lambda: next(times)
    publisher.publish(1.0)
    publisher.timer = lambda: clock[0]
    clock[0] = 100.5 + PUBLISH_SECONDS
    assert not publisher.due()
    clock[0] = 100.5 + 0.5 / PUBLISH_SHARE
    assert publisher.due()


def _index_config() -> Any:
    from agent.config import IndexConfig

    return IndexConfig(enabled=True, title="Call recordings")


def test_shipping_writes_the_pass_time_not_the_clock(site: Site, make_agent: Any) -> None:
    write_recording(site.spool_file(NAME), seconds=1)
    agent = make_agent(site.config(spool={"backfill_days": 100_000}))
    now = time.time() + 3600.0  # a made-up time, an hour ahead of the wall clock
    agent.start(now)
    assert agent.shipping.step(now) == 1
    row = agent.store.by_stem(NAME[:-4])
    assert row.state == "done"
    assert row.uploaded_at == now


class HeldTransport(LocalTransport):
    """A local destination whose uploads of names containing `held` wait for `release`."""

    def __init__(self, root: Path, held: str) -> None:
        super().__init__(root=root)
        self.held = held
        self.release = threading.Event()

    @property
    def features(self) -> Features:
        return dataclasses.replace(super().features, parallel=2)

    def put(self, local: Path, remote: str, **kwargs: Any) -> None:
        if self.held in remote:
            assert self.release.wait(30)
        super().put(local, remote, **kwargs)


SLOW = "2024/03/15/out-18005551234-1001-20240315-101502-1710497702.1.wav"
NEXT = "2024/03/15/out-18005551234-1001-20240315-101503-1710497703.2.wav"


def test_in_run_a_call_does_not_wait_for_a_slow_upload(site: Site, make_agent: Any) -> None:
    config = site.config(spool={"backfill_days": 100_000})
    transport = HeldTransport(config.destination.root, held="1710497702.1")
    agent = make_agent(config, transport=transport)
    write_recording(site.spool_file(SLOW), seconds=1, seed=1)
    now = time.time()
    agent.start(now)
    slow = agent.store.by_stem(SLOW[:-4])
    # A pass in `run` ends with the upload still running, and what is in flight is not due.
    agent.run_once(now, drain=False)
    assert agent.shipping.busy() == {slow.id}
    assert agent.store.next_due(besides=agent.shipping.busy()) is None
    write_recording(site.spool_file(NEXT), seconds=1, seed=2)
    agent.pipeline.observe(NEXT, now + 1)
    passes_until(agent, lambda: agent.shipping.busy() == {slow.id}, now + 1)
    assert agent.store.by_stem(NEXT[:-4]).state == "done"
    assert agent.store.by_stem(SLOW[:-4]).state == "uploading"
    # Its end rings the loop, and the next pass records it.
    transport.release.set()
    passes_until(agent, lambda: not agent.shipping.busy(), now + 2)
    assert agent.store.by_stem(SLOW[:-4]).state == "done"
    assert agent.store.by_stem(SLOW[:-4]).uploaded_at == now + 2


def passes_until(agent: Any, done: Callable[[], bool], now: float) -> None:
    """Passes as `run` makes them, each after a ring (an upload's end), until `done`."""
    deadline = time.monotonic() + 30
    agent.run_once(now, drain=False)
    while not done():
        assert time.monotonic() < deadline
        agent.wakeup.wait(1.0)
        agent.run_once(now, drain=False)


def test_in_run_pages_keep_their_pace(site: Site, make_agent: Any) -> None:
    agent = make_agent(site.config(spool={"backfill_days": 100_000}))
    write_recording(site.spool_file(SLOW), seconds=1, seed=1)
    now = time.time()
    agent.start(now)
    agent.run_once(now)  # published at once: nothing was published before
    manifest = site.dest / "2024/03/15/manifest.json"
    first = manifest.read_bytes()
    write_recording(site.spool_file(NEXT), seconds=1, seed=2)
    agent.pipeline.observe(NEXT, now + 1)
    passes_until(agent, lambda: agent.store.by_stem(NEXT[:-4]).state == "done", now + 1)
    due = agent.run_once(now + 1, drain=False)
    assert manifest.read_bytes() == first  # not yet: the pace
    assert due is not None and now + 1 < due <= now + 1 + PUBLISH_SECONDS
    agent.publisher.timer = lambda: time.monotonic() + PUBLISH_SECONDS
    agent.run_once(due, drain=False)
    assert len(json.loads(manifest.read_bytes())["recordings"]) == 2


def test_a_ring_from_a_signal_handler_wakes_the_wait() -> None:
    wake = Wakeup()
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: wake.ring())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        began = time.monotonic()
        assert wake.wait(30.0)
        assert time.monotonic() - began < 15.0
        assert not wake.wait(0.0)  # the ring was consumed
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        wake.close()


def test_rings_never_block_even_when_nobody_waits() -> None:
    wake = Wakeup()
    try:
        for _ in range(200_000):  # far more than a pipe holds
            wake.ring()
        assert wake.wait(0.0)
        assert not wake.wait(0.0)
        wake.ring()
        wake.clear()
        assert not wake.wait(0.0)
    finally:
        wake.close()


def test_a_signal_stops_run_forever_at_once(site: Site, make_agent: Any) -> None:
    agent = make_agent()
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: agent.stop())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        began = time.monotonic()
        agent.run_forever()  # idle: it would otherwise wait IDLE_WAKE_SECONDS and loop
        assert time.monotonic() - began < 15.0
        assert agent.stopping
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
