"""Two agents starting at once on one root: status.json is claimed with a create that the
destination refuses for an existing name (S3's If-None-Match: *, a hard link on a local
folder), so exactly one wins and the other is refused as an owned root is. Against the
real Ceph RGW (bare and retry-wrapped, as the agent has it), moto's S3 server and a local
folder."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AgentError
from agent.roles.destination import STATUS_FILE, Destination
from agent.store.state import Store
from agent.transport import Features, Transport
from agent.transport.local import LocalTransport
from agent.transport.retry import RetryingTransport
from tests.support.s3 import S3Server

HOSTS = ("pbx-a", "pbx-b")
DEADLINE = 30.0


class ReadTogether:
    """A transport whose first read_bytes returns only once every agent has read: both
    see a root with no status.json before either claims it (the race, made certain)."""

    def __init__(self, inner: Transport, barrier: threading.Barrier) -> None:
        self.inner = inner
        self.barrier = barrier
        self.reads = 0

    @property
    def features(self) -> Features:
        return self.inner.features

    def probe(self) -> None:
        self.inner.probe()

    def read_bytes(self, remote: str) -> bytes | None:
        data = self.inner.read_bytes(remote)
        self.reads += 1
        if self.reads == 1:
            self.barrier.wait(DEADLINE)
        return data

    def write_bytes(self, remote: str, data: bytes) -> None:
        self.inner.write_bytes(remote, data)

    def listdir(self, folder: str = "") -> list[str]:
        return self.inner.listdir(folder)  # the owner check looks for site folders


@pytest.fixture(params=["local", "s3", "s3+retry", "moto"])
def transports(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Transport]]:
    """Two transports on one root, as two agents on two machines would have."""
    kind = request.param
    if kind == "local":
        (tmp_path / "dest").mkdir()
        made: list[Transport] = [LocalTransport(root=tmp_path / "dest") for _ in HOSTS]
    else:
        server: S3Server = request.getfixturevalue("moto" if kind == "moto" else "rgw")
        bucket = server.new_bucket(request.node.name)
        made = [server.transport(bucket, "pbx1") for _ in HOSTS]
        if kind == "s3+retry":
            made = [RetryingTransport(t) for t in made]
    yield made
    for transport in made:
        transport.close()


def claim_at_once(transports: list[Transport], tmp_path: Path) -> dict[str, Exception | None]:
    """Each host's Destination probed in its own thread, both past their read first."""
    barrier = threading.Barrier(len(HOSTS))
    outcome: dict[str, Exception | None] = {}

    def agent(host: str, transport: Transport) -> None:
        store = Store.open(tmp_path / f"{host}.db")
        try:
            destination = Destination(
                transport=ReadTogether(transport, barrier),  # type: ignore[arg-type]
                store=store,
                summary=lambda now: {"host": host, "generated_at": now},
                host=host,
            )
            destination.probe(1000.0)
            outcome[host] = None
        except Exception as exc:  # the refusal, or a failure the test shows
            outcome[host] = exc
        finally:
            store.close()

    threads = [
        threading.Thread(target=agent, args=(host, t))
        for host, t in zip(HOSTS, transports, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not any(t.is_alive() for t in threads)
    return outcome


def test_of_two_agents_starting_at_once_one_owns_the_root(
    transports: list[Transport], tmp_path: Path
) -> None:
    outcome = claim_at_once(transports, tmp_path)
    winners = [host for host, exc in outcome.items() if exc is None]
    assert len(winners) == 1, outcome
    (loser,) = set(HOSTS) - set(winners)
    refusal = outcome[loser]
    assert isinstance(refusal, AgentError), refusal
    assert f"already belongs to the agent on {winners[0]!r}" in str(refusal)
    assert "one agent per root" in str(refusal)
    status: dict[str, Any] = json.loads(transports[0].read_bytes(STATUS_FILE) or b"null")
    assert status == {"host": winners[0], "generated_at": 1000.0}


def test_a_root_already_ours_is_not_claimed_again(
    transports: list[Transport], tmp_path: Path
) -> None:
    """A restart finds its own status.json: no create, no refusal, nothing rewritten."""
    transports[0].write_bytes(STATUS_FILE, json.dumps({"host": "pbx-a"}).encode())
    store = Store.open(tmp_path / "state.db")
    try:
        destination = Destination(
            transport=transports[1],
            store=store,
            summary=lambda now: {"host": "pbx-a", "generated_at": now},
            host="pbx-a",
        )
        assert destination.probe(1000.0) and destination.owner_checked
    finally:
        store.close()
    assert json.loads(transports[0].read_bytes(STATUS_FILE) or b"null") == {"host": "pbx-a"}
