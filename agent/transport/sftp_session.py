"""The session plumbing under SftpTransport: pooled SSH connections, request pipelining.

A session is one SSH connection with its SFTP client (and, where the account allows, a
shell for `sha256sum`). The pool opens them on demand, reuses them across files and drops
broken ones; `InFlight` keeps several write requests outstanding to hide round trips;
Also here: which asyncssh
exceptions mean what, and the statvfs reading behind "remote disk full".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import asyncssh

T = TypeVar("T")

BLOCK = 255 * 1024  # one SFTP write request
MAX_REQUESTS = 8  # write requests in flight per file: hides the round trips (2 MiB)
READ_CHUNK = 1 << 20  # read-back verification; asyncssh splits it into parallel reads
MIN_FREE_BYTES = 1 << 20
MIN_FREE_INODES = 0.01
_ST_RDONLY = 0x1  # statvfs@openssh.com flag
_SHA256SUM = re.compile(r"\\?([0-9a-f]{64}) ")
_TAG = "recsync "
THREAD_PREFIX = "sftp "

# What the library and the network raise; TimeoutError is an OSError since Python 3.11.
LIBRARY_ERRORS = (asyncssh.Error, OSError)
# SFTP status errors leave the connection usable; anything else of the library breaks it.
LOST = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)
DISK = (asyncssh.SFTPFailure, asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)
BAD_NAME = (
    asyncssh.SFTPBadMessage,
    asyncssh.SFTPInvalidFilename,
    asyncssh.SFTPNotADirectory,
    asyncssh.SFTPFileIsADirectory,
)
REFUSED = (asyncssh.SFTPPermissionDenied, asyncssh.SFTPWriteProtect)


def breaks_session(exc: BaseException) -> bool:
    """Whether the session `exc` came from must be dropped rather than reused."""
    return not isinstance(exc, asyncssh.SFTPError) or isinstance(exc, LOST)


@dataclass(frozen=True)
class Space:
    """What statvfs@openssh.com says about the file system under the root."""

    free_bytes: int
    free_inodes: float | None  # the free fraction; None where the file system counts none
    read_only: bool

    @property
    def full(self) -> bool:
        low_inodes = self.free_inodes is not None and self.free_inodes < MIN_FREE_INODES
        return self.free_bytes < MIN_FREE_BYTES or low_inodes


async def disk_space(sftp: asyncssh.SFTPClient, path: str) -> Space | None:
    """Free space under `path`; None when the server does not offer statvfs."""
    try:
        vfs = await sftp.statvfs(path)
    except asyncssh.SFTPOpUnsupported:
        return None
    inodes = vfs.favail / vfs.files if vfs.files else None
    return Space(vfs.bavail * (vfs.frsize or vfs.bsize), inodes, bool(vfs.flags & _ST_RDONLY))


class _QuietLostSends(logging.Filter):
    """asyncio logs "socket.send() raised exception." for every write queued before a lost
    connection is noticed; asyncssh reports the loss once, as ConnectionLost."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = (record.threadName or "").startswith(THREAD_PREFIX)
        return not (ours and record.getMessage().startswith("socket.send() raised"))


QUIET_LOST_SENDS = _QuietLostSends()


async def deadline(step: Awaitable[T], timeout: float) -> T:
    """One request with a deadline: a hung server is a TimeoutError, not a hang."""
    return await asyncio.wait_for(step, timeout)


async def quietly(step: Callable[[], Awaitable[object]], timeout: float) -> None:
    """Best-effort clean-up after a failure, which must not hide the failure."""
    with suppress(*LIBRARY_ERRORS):
        await asyncio.wait_for(step(), min(timeout, 5))


class InFlight:
    """SFTP requests sent and not answered yet; waiting raises the first failure."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pending: set[asyncio.Future[Any]] = set()

    def send(self, request: Awaitable[T]) -> asyncio.Future[T]:
        future = asyncio.ensure_future(request)
        self.pending.add(future)
        return future

    async def settle(self, limit: int = 0) -> None:
        """Wait until at most `limit` requests are unanswered."""
        while len(self.pending) > limit:
            done, self.pending = await asyncio.wait(
                self.pending, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise TimeoutError(f"no answer within {self.timeout:g} s")
            failures = [error for request in done if (error := request.exception())]
            if failures:
                raise failures[0]

    async def cancel(self) -> None:
        for request in self.pending:
            request.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        self.pending.clear()


@dataclass(eq=False)
class Session:
    """One SSH connection and its SFTP client, used by one job at a time."""

    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    can_exec: bool = True  # until a command fails: SFTP-only accounts refuse them
    shell: asyncssh.SSHClientProcess[str] | None = None
    broken: bool = False

    @property
    def block_size(self) -> int:
        """One write request: ours, or less where the server says so (16 KiB if silent)."""
        return min(BLOCK, self.sftp.limits.max_write_len or BLOCK)

    def usable(self) -> bool:
        return not self.broken and not self.conn.is_closed()

    async def sha256_by_command(self, path: str, timeout: float) -> str | None:
        """`sha256sum` in the session's shell; None where the account runs no commands."""
        shell = self.shell or await self._start_shell(timeout)
        if shell is None:
            return None
        # One tagged line per request, whatever else the account's shell start-up prints.
        try:
            shell.stdin.write(f'echo "recsync $(sha256sum -- {shlex.quote(path)} 2>&1)"\n')
        except BrokenPipeError:  # an SFTP-only account's server closed it already
            self.shell = None
            return None
        try:
            while line := await deadline(shell.stdout.readline(), timeout):
                if line.startswith(_TAG):
                    found = _SHA256SUM.match(line[len(_TAG) :])
                    return found.group(1) if found else None
        except TimeoutError:  # a shell that never answers: read the file back instead
            shell.close()
            self.shell = None
        return None  # the shell ended: an SFTP-only account or no login shell

    async def _start_shell(self, timeout: float) -> asyncssh.SSHClientProcess[str] | None:
        """A `sh` kept open per connection: a new exec per file would cost a login each."""
        try:
            self.shell = await deadline(
                self.conn.create_process("sh", encoding="utf-8", errors="replace"), timeout
            )
        except asyncssh.ChannelOpenError:
            return None
        return self.shell

    async def sha256_by_reading(self, path: str, timeout: float) -> str:
        digest = hashlib.sha256()
        file = await deadline(
            self.sftp.open(path, "rb", block_size=BLOCK, max_requests=MAX_REQUESTS), timeout
        )
        try:
            offset = 0
            # Opened without an encoding, the file reads bytes (asyncssh types it AnyStr).
            while chunk := cast(bytes, await deadline(file.read(READ_CHUNK, offset), timeout)):
                digest.update(chunk)
                offset += len(chunk)
        finally:
            await quietly(file.close, timeout)
        return digest.hexdigest()


class Pool:
    """Up to `size` sessions, opened on demand and reused; broken ones are dropped."""

    def __init__(self, connect: Callable[[], Awaitable[Session]], size: int) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Session] = []

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        async with self._slots:
            session = await self._take()
            try:
                yield session
            finally:
                if session.usable():
                    self._idle.append(session)
                else:
                    session.conn.abort()

    async def _take(self) -> Session:
        while self._idle:
            session = self._idle.pop()
            if session.usable():
                return session
            session.conn.abort()
        return await self._connect()

    async def close(self, timeout: float) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            session.conn.close()
        for session in idle:
            with suppress(TimeoutError):
                await asyncio.wait_for(session.conn.wait_closed(), timeout)
