"""RetryingTransport: a passing fault is retried within the call, the rest pass through."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.backoff import backoff
from agent.errors import DestinationDown, Interrupted, PermanentError, TransientError
from agent.transport import Features
from agent.transport.retry import RetryingTransport
from agent.transport.sftp import SftpTransport
from tests.support.sshd import Sshd, TcpProxy


class Scripted:
    """A transport whose `put` raises the scripted errors in turn, then succeeds."""

    features = Features(parallel=7)

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    def put(self, local: Path, remote: str, **kwargs: Any) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    def sweep(self, folders: list[str]) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return len(folders)


class FakeTime:
    """A clock that only sleeping moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def wrap(inner: Any, fake: FakeTime, **options: Any) -> RetryingTransport:
    return RetryingTransport(inner, sleep=fake.sleep, clock=lambda: fake.now, **options)


def test_a_transient_fault_is_retried_at_once_then_after_a_pause() -> None:
    fake, inner = FakeTime(), Scripted([TransientError("reset"), TransientError("reset")])
    wrap(inner, fake).put(Path("x"), "2024/03/15/a.wav", sha256="0" * 64)
    assert inner.calls == 3
    assert sum(fake.slept) == pytest.approx(0.5)  # the first retry did not wait at all


def test_a_retry_after_within_the_budget_is_waited_and_one_past_it_passes_up() -> None:
    fake = FakeTime()
    inner = Scripted([TransientError("slow down", retry_after=2.0)])
    wrap(inner, fake).put(Path("x"), "a", sha256="0" * 64)
    assert inner.calls == 2 and fake.slept and sum(fake.slept) == pytest.approx(2.0)
    later = FakeTime()
    patient = Scripted([TransientError("slow down", retry_after=30.0)])
    with pytest.raises(TransientError) as caught:
        wrap(patient, later, max_elapsed=5.0).put(Path("x"), "a", sha256="0" * 64)
    assert patient.calls == 1 and later.slept == []  # the per-file backoff waits it out
    assert caught.value.retry_after == 30.0


def test_it_gives_up_within_max_elapsed_and_the_error_passes_up() -> None:
    fake, inner = FakeTime(), Scripted([TransientError("down")] * 100)
    transport = wrap(inner, fake, max_elapsed=5.0)
    with pytest.raises(TransientError, match="down"):
        transport.put(Path("x"), "a", sha256="0" * 64)
    assert fake.now - 100.0 <= 5.0
    # at 0 s, again at once, then at 0.5 s, 1.5 s and 3.5 s: 4 s more would pass 5 s
    assert inner.calls == 5 and fake.now == 103.5
    assert transport.retries == 4


@pytest.mark.parametrize(
    "error", [DestinationDown("disk full"), PermanentError("bad name"), Interrupted("stop")]
)
def test_what_retrying_cannot_help_passes_straight_through(error: Exception) -> None:
    fake, inner = FakeTime(), Scripted([error])
    with pytest.raises(type(error)):
        wrap(inner, fake).put(Path("x"), "a", sha256="0" * 64)
    assert inner.calls == 1 and fake.slept == []


def test_a_stop_during_the_wait_interrupts_it() -> None:
    fake, inner = FakeTime(), Scripted([TransientError("reset")] * 3)
    stop = [False]

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        stop[0] = True  # SIGTERM arrives while it waits

    transport = RetryingTransport(inner, sleep=sleep, clock=lambda: fake.now)
    with pytest.raises(Interrupted):
        transport.put(Path("x"), "a", sha256="0" * 64, should_stop=lambda: stop[0])
    assert inner.calls == 2


def test_features_are_the_adapters_and_an_iterator_survives_a_retry() -> None:
    fake, inner = FakeTime(), Scripted([TransientError("reset")])
    transport = wrap(inner, fake)
    assert transport.features.parallel == 7
    assert transport.sweep(iter(["2024/03/15", "2024/03/16"])) == 2


def test_the_schedule_is_the_shared_backoff() -> None:
    assert [backoff(n, first=0.5, cap=60) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(40, first=30, cap=3600) == 3600
    assert backoff(0, first=10, cap=3600, jitter=0.2, rand=lambda: 1.0) == pytest.approx(12.0)


def test_a_cut_connection_costs_a_retry_not_a_backoff(
    sshd: Sshd, sftp_root: Path, tmp_path: Path, tcp_proxy: Callable[..., TcpProxy]
) -> None:
    """The connection is reset partway into a file: bare, the put fails (and the file
    waits 30 s for its backoff); wrapped, it goes through on a fresh session in the same
    call."""
    proxy = tcp_proxy(sshd.port)
    known = sshd.write_known_hosts(tmp_path / "known_hosts", port=proxy.port)
    data = os.urandom(200_000)
    local = tmp_path / "rec.wav"
    local.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()

    def transport() -> SftpTransport:
        return sshd.transport(sftp_root, port=proxy.port, known_hosts=known, connections=1)

    bare = transport()
    wrapped = RetryingTransport(transport())
    try:
        for t in (bare, wrapped):
            t.write_bytes("first.txt", b"the connection works")
        proxy.cut_after(100_000)
        with pytest.raises(TransientError):
            bare.put(local, "2024/03/15/bare.wav", sha256=sha)
        proxy.cut_after(100_000)
        wrapped.put(local, "2024/03/15/rec.wav", sha256=sha)
        assert proxy.cuts >= 2
        assert wrapped.retries >= 1  # and no 30 s backoff: delivered in this call
        assert (sftp_root / "2024/03/15/rec.wav").read_bytes() == data
        assert not (sftp_root / "2024/03/15/bare.wav").exists()
    finally:
        bare.close()
        wrapped.close()
