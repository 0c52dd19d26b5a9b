"""SftpTransport and sshkeys against a real OpenSSH sshd (tests/support/sshd.py)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from agent.errors import DestinationDown, Interrupted, TransientError
from agent.transport import Features
from agent.transport import sftp as sftp_module
from agent.transport.sftp import SftpTransport, Space
from agent.transport.sftp_session import Session
from agent.transport.sshkeys import (
    fingerprint,
    host_key_of,
    keygen,
    known_hosts_entry,
    known_keys,
    trust,
)
from tests.support.sshd import Sshd, TcpProxy

Make = Callable[..., SftpTransport]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _temps(folder: Path) -> list[Path]:
    return list(folder.rglob(".recsync-*.tmp"))


def _staged(tmp_path: Path, size: int, name: str = "rec.wav") -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def _poll(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(params=["openssh", "asyncssh"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """`make(server, root, **options)` -> an SftpTransport, closed after the test; each
    test runs with either client pushing the bytes (the rest is asyncssh's in both)."""
    made: list[SftpTransport] = []

    def build(server: Sshd, root: Path, **options: Any) -> SftpTransport:
        transport = server.transport(root, **({"client": request.param} | options))
        made.append(transport)
        return transport

    yield build
    for transport in made:
        transport.close()


@pytest.fixture
def own_sshd() -> Iterator[Sshd]:
    """A private server this test may stop, restart or re-key."""
    server = Sshd()
    server.start()
    yield server
    server.close()


# --- round trips ---------------------------------------------------------------------------


def test_put_round_trip(sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path) -> None:
    local, data = _staged(tmp_path, 300_000)
    transport = make(sshd, sftp_root, file_mode=0o640, dir_mode=0o750)
    transport.put(local, "2024/03/15/rec.wav", sha256=_sha(data))
    shipped = sftp_root / "2024/03/15/rec.wav"
    assert shipped.read_bytes() == data
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o640
    for folder in ("2024", "2024/03", "2024/03/15"):
        assert stat.S_IMODE((sftp_root / folder).stat().st_mode) == 0o750
    assert _temps(sftp_root) == []


def test_put_replaces_and_verifies_sha256(
    sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make(sshd, sftp_root, verify="sha256")
    for size in (0, 1, 200_000):
        local, data = _staged(tmp_path, size)
        transport.put(local, "2024/03/15/rec.wav", sha256=_sha(data))
        assert (sftp_root / "2024/03/15/rec.wav").read_bytes() == data
    assert "sftp-verify-read-back" not in caplog.text  # a shell account runs sha256sum
    transport.probe()
    assert transport.features.sha256_by == "shell (sha256sum)"


def test_close_interrupts_an_upload_in_flight(
    sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path
) -> None:
    local, data = _staged(tmp_path, 1_000_000)
    transport = make(sshd, sftp_root, bwlimit_kbps=800)  # 100 KB/s: 10 s for this file
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            transport.put(local, "2024/03/15/a.wav", sha256=_sha(data))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=upload)
    worker.start()
    assert _poll(lambda: bool(_temps(sftp_root)))
    transport.close()
    worker.join(10)
    assert [type(e) for e in errors] == [Interrupted]
    assert not (sftp_root / "2024/03/15/a.wav").exists()
    assert _temps(sftp_root) == []


# --- host keys and logins ------------------------------------------------------------------


def test_unknown_host_key_pauses_and_writes_nothing(
    sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    pattern = rf"host key of \[127\.0\.0\.1\]:{sshd.port} is not in .*recsync trust-host"
    with pytest.raises(DestinationDown, match=pattern):
        make(sshd, sftp_root, known_hosts=known).write_bytes("a.txt", b"x")  # no file
    known.write_text("[127.0.0.1]:1 " + sshd.host_key_line().split(" ", 1)[1] + "\n")
    transport = make(sshd, sftp_root, known_hosts=known)
    with pytest.raises(DestinationDown, match=pattern):
        transport.write_bytes("a.txt", b"x")
    with pytest.raises(DestinationDown, match="is not in"):
        transport.probe()
    assert list(sftp_root.iterdir()) == []

    key = host_key_of(sshd.host, sshd.port)
    assert fingerprint(key).startswith("SHA256:")
    trust(known, sshd.host, sshd.port, key)
    transport.write_bytes("a.txt", b"x")  # the same transport recovers by itself
    assert (sftp_root / "a.txt").read_bytes() == b"x"


def test_changed_host_key_pauses_with_a_warning(
    sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path
) -> None:
    other = keygen(tmp_path / "other", "impostor")  # any ed25519 public key will do
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(other.split()[:2]) + "\n")
    transport = make(sshd, sftp_root, known_hosts=known)
    with pytest.raises(DestinationDown, match=r"does not match .*someone is in the middle"):
        transport.write_bytes("a.txt", b"x")
    assert list(sftp_root.iterdir()) == []
    trust(known, sshd.host, sshd.port, host_key_of(sshd.host, sshd.port))
    assert known.read_text().count(f"[127.0.0.1]:{sshd.port} ") == 1
    transport.write_bytes("a.txt", b"x")
    assert (sftp_root / "a.txt").exists()


def test_keygen_key_logs_in_once_authorized(own_sshd: Sshd, make: Make, tmp_path: Path) -> None:
    private = tmp_path / "keys" / "id_ed25519"
    public = keygen(private, "recsync@pbx")
    assert public.startswith("ssh-ed25519 ") and public.endswith(" recsync@pbx")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{private}.pub").stat().st_mode) == 0o644
    with pytest.raises(FileExistsError):
        keygen(private, "again")
    root = own_sshd.new_dir("keygen")
    with pytest.raises(DestinationDown, match="refused the login"):
        make(own_sshd, root, key_file=private).write_bytes("a.txt", b"x")
    own_sshd.authorized_keys.write_text(public + "\n")
    make(own_sshd, root, key_file=private).write_bytes("a.txt", b"x")
    assert (root / "a.txt").exists()


def test_missing_client_key_pauses(sshd: Sshd, sftp_root: Path, make: Make) -> None:
    with pytest.raises(DestinationDown, match="client key"):
        make(sshd, sftp_root, key_file=sftp_root / "no-such-key").probe()


# --- faults --------------------------------------------------------------------------------


def test_server_down_is_transient_and_recovers(own_sshd: Sshd, make: Make, tmp_path: Path) -> None:
    root = own_sshd.new_dir("down")
    local, data = _staged(tmp_path, 50_000)
    transport = make(own_sshd, root, timeout=5)
    transport.put(local, "2024/03/15/a.wav", sha256=_sha(data))  # a pooled connection
    own_sshd.stop()
    with pytest.raises(TransientError):
        transport.put(local, "2024/03/15/b.wav", sha256=_sha(data))
    with pytest.raises(TransientError):  # failing, not paused: uploads retry with backoff
        transport.probe()
    own_sshd.start()
    transport.probe()
    transport.put(local, "2024/03/15/b.wav", sha256=_sha(data))
    assert (root / "2024/03/15/b.wav").read_bytes() == data


def test_cut_mid_file_leaves_no_final_file(
    sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path, tcp_proxy: Callable[..., TcpProxy]
) -> None:
    proxy = tcp_proxy(sshd.port)
    known = sshd.write_known_hosts(tmp_path / "known_hosts", port=proxy.port)
    transport = make(sshd, sftp_root, port=proxy.port, known_hosts=known)
    transport.write_bytes("2024/03/15/first.txt", b"the connection works")
    local, data = _staged(tmp_path, 2_000_000)
    proxy.cut_after(500_000)
    with pytest.raises(TransientError):
        transport.put(local, "2024/03/15/rec.wav", sha256=_sha(data))
    assert proxy.cuts >= 1
    assert not (sftp_root / "2024/03/15/rec.wav").exists()
    # The cut connection could not remove its temporary: the next connection does. (With
    # OpenSSH's client pushing the bytes, the asyncssh session removes it at once, unless
    # the proxy cut that connection too.)
    left = len(_temps(sftp_root))
    assert left == 1 if transport.client == "asyncssh" else left <= 1
    transport.put(local, "2024/03/15/rec.wav", sha256=_sha(data))
    assert (sftp_root / "2024/03/15/rec.wav").read_bytes() == data
    assert _temps(sftp_root) == []


def test_a_temporary_a_cut_could_not_remove_goes_with_the_next_upload(
    sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path
) -> None:
    """Where the cut took the asyncssh session too, the temporary is left to the next
    session; with OpenSSH's client pushing every byte, the next upload must call on it."""
    transport = make(sshd, sftp_root)
    local, data = _staged(tmp_path, 100_000)
    transport.put(local, "2024/03/15/a.wav", sha256=_sha(data))  # its folder known now
    stray = sftp_root / "2024/03/15/.recsync-0123456789abcdef.tmp"
    stray.write_bytes(data[:5000])
    transport._orphans.add(transport._path("2024/03/15/.recsync-0123456789abcdef.tmp"))
    transport.put(local, "2024/03/15/b.wav", sha256=_sha(data))
    assert _temps(sftp_root) == []


def test_hung_server_times_out(
    sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path, tcp_proxy: Callable[..., TcpProxy]
) -> None:
    proxy = tcp_proxy(sshd.port)
    known = sshd.write_known_hosts(tmp_path / "known_hosts", port=proxy.port)
    transport = make(sshd, sftp_root, port=proxy.port, known_hosts=known, timeout=1)
    transport.write_bytes("a.txt", b"x")
    proxy.pause()
    began = time.monotonic()
    with pytest.raises(TransientError, match="no answer"):
        transport.write_bytes("b.txt", b"y")
    assert time.monotonic() - began < 5
    proxy.resume()
    transport.write_bytes("b.txt", b"y")
    assert (sftp_root / "b.txt").read_bytes() == b"y"


def test_permission_denied_on_the_root_pauses(
    unprivileged_sshd: Sshd, make: Make, tmp_path: Path
) -> None:
    root = unprivileged_sshd.new_dir("readonly")
    root.chmod(0o555)
    local, data = _staged(tmp_path, 1000)
    transport = make(unprivileged_sshd, root)
    with pytest.raises(DestinationDown, match="cannot write in"):
        transport.probe()
    with pytest.raises(DestinationDown, match="permission denied"):
        transport.put(local, "2024/03/15/a.wav", sha256=_sha(data))
    assert list(root.iterdir()) == []
    root.chmod(0o755)  # the admin fixes it: everything goes through
    transport.probe()
    transport.put(local, "2024/03/15/a.wav", sha256=_sha(data))
    assert (root / "2024/03/15/a.wav").read_bytes() == data


def test_sftp_only_account_verifies_by_reading_back(
    sftp_only_sshd: Sshd, make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = sftp_only_sshd.new_dir("sftp-only")
    transport = make(sftp_only_sshd, root, verify="sha256")
    with caplog.at_level(logging.WARNING, logger="agent.transport.sftp"):
        for i in range(3):
            local, data = _staged(tmp_path, 300_000, f"r{i}.wav")
            transport.put(local, f"2024/03/15/r{i}.wav", sha256=_sha(data))
            assert (root / f"2024/03/15/r{i}.wav").read_bytes() == data
    assert caplog.text.count("sftp-verify-read-back") == 1
    assert transport.features.sha256_by == "read-back"


def test_the_probe_learns_what_the_features_say(
    sshd: Sshd, sftp_only_sshd: Sshd, sftp_root: Path, make: Make
) -> None:
    shell = make(sshd, sftp_root, verify="sha256", connections=3)
    assert shell.features.sha256_by == "not yet known"
    shell.probe()
    assert shell.features == Features(
        parallel=3, atomic_replace=True, fsync=True, verify="sha256", sha256_by="shell (sha256sum)"
    )
    sftp_only = make(sftp_only_sshd, sftp_only_sshd.new_dir("learn"))
    sftp_only.probe()
    assert sftp_only.features.sha256_by == "read-back"
    assert sftp_only.features.verify == "size"


def test_a_shell_the_server_closed_before_the_first_command_means_read_back() -> None:
    """An SFTP-only account's server may close the `sh` channel before the probe writes
    its command (a race with ForceCommand internal-sftp): no command, not a fault."""

    class ClosedStdin:
        def write(self, data: str) -> None:
            raise BrokenPipeError("Channel not open for sending")

    class ClosedShell:
        stdin = ClosedStdin()

    session = Session(conn=None, sftp=None, shell=ClosedShell())  # type: ignore[arg-type]
    assert asyncio.run(session.sha256_by_command("a.wav", 1.0)) is None
    assert session.shell is None


def test_full_disk_pauses(
    sshd: Sshd, sftp_root: Path, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def full(sftp: asyncssh.SFTPClient, path: str) -> Space:
        return Space(free_bytes=4096, free_inodes=0.5, read_only=False)

    monkeypatch.setattr(sftp_module, "disk_space", full)
    transport = make(sshd, sftp_root)
    with pytest.raises(DestinationDown, match="disk full"):
        transport.probe()
    # A generic SFTP failure (here: a file where a folder must go) while the disk is full.
    (sftp_root / "2024").write_bytes(b"")
    with pytest.raises(DestinationDown, match="disk full"):
        transport.write_bytes("2024/03/15/manifest.json", b"{}")
    monkeypatch.undo()
    with pytest.raises(TransientError):
        transport.write_bytes("2024/03/15/manifest.json", b"{}")


def test_bwlimit_caps_the_rate(sshd: Sshd, sftp_root: Path, make: Make, tmp_path: Path) -> None:
    local, data = _staged(tmp_path, 1_000_000)
    transport = make(sshd, sftp_root, bwlimit_kbps=16_000)  # 2 MB/s
    began = time.monotonic()
    transport.put(local, "a.wav", sha256=_sha(data))
    assert 0.3 <= time.monotonic() - began < 5  # 0.5 s less the first burst


# --- sshkeys -------------------------------------------------------------------------------


def test_known_hosts_entry_and_trust(tmp_path: Path) -> None:
    keygen(tmp_path / "k1", "one")
    keygen(tmp_path / "k2", "two")
    key1 = asyncssh.read_public_key(tmp_path / "k1.pub")
    key2 = asyncssh.read_public_key(tmp_path / "k2.pub")
    assert known_hosts_entry("web", 22, key1).startswith("web ssh-ed25519 AAAA")
    assert known_hosts_entry("web", 2222, key1).startswith("[web]:2222 ssh-ed25519 AAAA")
    assert not known_hosts_entry("web", 22, key1).endswith("one")

    known = tmp_path / "new" / "dir" / "known_hosts"
    other = known_hosts_entry("other", 22, key2)
    trust(known, "web", 2222, key1)
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(known.stat().st_mode) == 0o644
    known.write_text(known.read_text() + other + "\n# comment\n")
    trust(known, "web", 2222, key2)
    lines = known.read_text().splitlines()
    assert other in lines and "# comment" in lines
    assert [line for line in lines if line.startswith("[web]:2222")] == [
        known_hosts_entry("web", 2222, key2)
    ]
    assert known_keys(known, "web", 2222) == [key2]
    assert known_keys(tmp_path / "absent", "web", 2222) == []


def test_trust_replaces_hashed_entries(tmp_path: Path) -> None:
    import base64
    import hmac

    keygen(tmp_path / "k1", "one")
    key = asyncssh.read_public_key(tmp_path / "k1.pub")
    salt = os.urandom(20)
    digest = hmac.new(salt, b"[web]:2222", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    known = tmp_path / "known_hosts"
    known.write_text(f"{hashed} " + known_hosts_entry("x", 22, key).split(" ", 1)[1] + "\n")
    assert known_keys(known, "web", 2222) == [key]
    trust(known, "web", 2222, key)
    assert known.read_text().splitlines() == [known_hosts_entry("web", 2222, key)]


def test_host_key_of_an_unreachable_server_is_transient(tmp_path: Path) -> None:
    with pytest.raises(TransientError):
        host_key_of("127.0.0.1", 1, timeout=5)
