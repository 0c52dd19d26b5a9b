"""The OpenSSH test server and the cutting proxy themselves, driven with asyncssh."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from tests.support.sshd import Sshd, TcpProxy, descendants, is_alive

T = TypeVar("T")
MIB = 1024 * 1024


def run(coro: Awaitable[T], timeout: float = 30) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def upload(options: dict[str, Any], path: Path, chunks: int, during: Any = None) -> None:
    """Write `chunks` MiB to `path` over SFTP; `during(i)` runs after chunk `i`."""
    async with (
        asyncssh.connect(**options) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(str(path), "wb") as file,
    ):
        for i in range(chunks):
            await file.write(os.urandom(MIB))
            if during is not None:
                during(i)


def test_client_key_is_accepted_and_sftp_lists_the_root(
    sshd: Sshd, sftp_root: Path, tmp_path: Path
) -> None:
    (sftp_root / "hello.txt").write_text("hi\n")
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")

    async def session() -> tuple[list[str], str]:
        async with asyncssh.connect(
            sshd.host,
            sshd.port,
            username=sshd.user,
            client_keys=[str(sshd.client_key)],
            known_hosts=str(known_hosts),
            config=None,
            agent_path=None,
        ) as conn:
            result = await conn.run("echo hi", check=True)
            async with conn.start_sftp_client() as sftp:
                names = [str(name) for name in await sftp.listdir(str(sftp_root))]
            return sorted(set(names) - {".", ".."}), str(result.stdout)

    names, echoed = run(session())
    assert names == ["hello.txt"]
    assert echoed == "hi\n"
    assert known_hosts.read_text() == sshd.host_key_line() + "\n"
    assert sshd.host_key_line().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAA")


def test_an_unknown_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")

    async def connect() -> None:
        async with asyncssh.connect(**sshd.client_options(empty)):
            pass

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        run(connect())


def test_sftp_only_server_refuses_commands_but_serves_sftp(
    sftp_only_sshd: Sshd, tmp_path: Path
) -> None:
    root = sftp_only_sshd.new_dir("sftp_only")
    marker = root / "marker"
    local = tmp_path / "local.txt"
    local.write_text("payload\n")

    async def session() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(**sftp_only_sshd.client_options()) as conn:
            result = await conn.run(f"touch {marker}; echo hi")
            async with conn.start_sftp_client() as sftp:
                await sftp.put(str(local), str(root / "shipped.txt"))
            return result

    result = run(session())
    assert result.exit_status != 0
    assert result.stdout != "hi\n"
    assert not marker.exists()
    assert (root / "shipped.txt").read_text() == "payload\n"


def test_the_unprivileged_user_meets_real_permission_denied(unprivileged_sshd: Sshd) -> None:
    server = unprivileged_sshd
    writable = server.new_dir("writable")
    read_only = server.new_dir("read_only")
    read_only.chmod(0o555)

    async def session() -> None:
        async with (
            asyncssh.connect(**server.client_options()) as conn,
            conn.start_sftp_client() as sftp,
        ):
            async with sftp.open(str(writable / "ok.bin"), "wb") as file:
                await file.write(b"ok")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.open(str(read_only / "denied.bin"), "wb")

    run(session())
    assert (writable / "ok.bin").stat().st_uid == server.uid != 0
    assert not (read_only / "denied.bin").exists()


def proxied(server: Sshd, proxy: TcpProxy) -> dict[str, Any]:
    """asyncssh options that reach `server` through `proxy`, host key checked."""
    path = server.base_dir / f"known_hosts.{proxy.port}"
    known_hosts = server.write_known_hosts(path, port=proxy.port)
    return {**server.client_options(known_hosts), "port": proxy.port}


def test_cut_breaks_a_running_sftp_upload(
    sshd: Sshd, sftp_root: Path, tcp_proxy: Callable[..., TcpProxy]
) -> None:
    proxy = tcp_proxy(sshd.port)
    target = sftp_root / "big.bin"

    def cut_midway(i: int) -> None:
        if i == 1:
            assert proxy.cut() == 1

    with pytest.raises((asyncssh.Error, OSError)):
        run(upload(proxied(sshd, proxy), target, chunks=16, during=cut_midway))
    assert proxy.cuts == 1
    assert 2 * MIB <= target.stat().st_size < 16 * MIB
    # The proxy keeps serving: the next connection goes through.
    run(upload(proxied(sshd, proxy), sftp_root / "after.bin", chunks=1))
    assert (sftp_root / "after.bin").stat().st_size == MIB


def test_cut_after_n_bytes_cuts_mid_file(
    sshd: Sshd, sftp_root: Path, tcp_proxy: Callable[..., TcpProxy]
) -> None:
    proxy = tcp_proxy(sshd.port)
    proxy.cut_after(3 * MIB)
    target = sftp_root / "big.bin"

    with pytest.raises((asyncssh.Error, OSError)):
        run(upload(proxied(sshd, proxy), target, chunks=16))
    assert proxy.wait_cut(10)
    assert proxy.bytes_forwarded == 3 * MIB
    assert proxy.active == 0
    assert 0 < target.stat().st_size < 3 * MIB


def test_pause_holds_bytes_until_resume(
    sshd: Sshd, sftp_root: Path, tcp_proxy: Callable[..., TcpProxy]
) -> None:
    proxy = tcp_proxy(sshd.port)
    proxy.pause()

    async def session() -> None:
        with pytest.raises(asyncssh.Error, match=r"(?i)time"):
            async with asyncssh.connect(**proxied(sshd, proxy), login_timeout=0.5):
                pass

    run(session())
    assert proxy.bytes_forwarded == 0
    proxy.resume()
    run(upload(proxied(sshd, proxy), sftp_root / "resumed.bin", chunks=1))
    assert (sftp_root / "resumed.bin").stat().st_size == MIB


def test_restart_keeps_port_and_host_key() -> None:
    with Sshd() as server:
        assert server.start_seconds is not None and server.start_seconds < 2.0
        port, line = server.port, server.host_key_line()
        run(upload(server.client_options(), server.root / "before.bin", chunks=1))
        server.restart()
        assert (server.port, server.host_key_line()) == (port, line)
        # The known_hosts file written before the restart still verifies the server.
        run(upload(server.client_options(), server.root / "after.bin", chunks=1))
    assert not server.is_running
    assert not server.base_dir.exists()


def test_stop_ends_open_sessions() -> None:
    with Sshd() as server:

        async def session() -> tuple[list[int], BaseException | None]:
            async with asyncssh.connect(**server.client_options()) as conn:
                await conn.run("true", check=True)
                assert server.pid is not None
                sessions = descendants(server.pid)
                server.stop()
                try:
                    await conn.run("true", check=True)
                except (asyncssh.Error, OSError) as error:
                    return sessions, error
                return sessions, None

        sessions, error = run(session())
        assert sessions, "an open connection has its own sshd process"
        assert error is not None
        assert not any(is_alive(pid) for pid in sessions)
