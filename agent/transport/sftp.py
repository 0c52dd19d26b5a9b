"""Shipping over SFTP with asyncssh, behind the synchronous Transport protocol.

asyncssh runs in one event loop on a daemon thread, started on first use. Each public
method submits a coroutine to it and waits, so the upload worker threads share one pool of
SSH connections (one SFTP client each), opened on demand, reused across files and replaced
when lost. Every request has a deadline: a hung server is a TransientError, not a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import io
import logging
import posixpath
import re
import secrets
import shlex
import stat
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import asyncssh

from agent.errors import AgentError, DestinationDown, Interrupted, PermanentError, TransientError
from agent.log import kv
from agent.testhooks import crash_point
from agent.transport import TEMP_PREFIX, TEMP_SUFFIX, Features, check_remote
from agent.transport.sshkeys import host_pattern, known_keys

log = logging.getLogger(__name__)
T = TypeVar("T")

BLOCK = 64 * 1024  # one SFTP write request
MAX_REQUESTS = 16  # write requests in flight per file: hides the round trips
READ_CHUNK = 1 << 20  # read-back verification; asyncssh splits it into parallel reads
KEEPALIVE_SECONDS = 15
KEEPALIVE_COUNT = 3
MIN_FREE_BYTES = 1 << 20
MIN_FREE_INODES = 0.01
_ST_RDONLY = 0x1  # statvfs@openssh.com flag
_SHA256SUM = re.compile(r"\\?([0-9a-f]{64}) ")
_TAG = "recsync "
VERIFY_MODES = ("size", "sha256")
_THREAD_PREFIX = "sftp "
# AES-GCM first: hardware AES through one OpenSSL call per packet, where asyncssh's
# chacha20-poly1305 (OpenSSH's first choice) costs several Python calls per packet.
_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]

# What the library and the network raise; TimeoutError is an OSError since Python 3.11.
_LIBRARY_ERRORS = (asyncssh.Error, OSError)
# SFTP status errors leave the connection usable; anything else of the library breaks it.
_LOST = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)
_DISK = (asyncssh.SFTPFailure, asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)
_BAD_NAME = (
    asyncssh.SFTPBadMessage,
    asyncssh.SFTPInvalidFilename,
    asyncssh.SFTPNotADirectory,
    asyncssh.SFTPFileIsADirectory,
)
_REFUSED = (asyncssh.SFTPPermissionDenied, asyncssh.SFTPWriteProtect)
_MISCONFIGURED = (asyncssh.KeyExchangeFailed, asyncssh.ProtocolNotSupported)


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
        ours = (record.threadName or "").startswith(_THREAD_PREFIX)
        return not (ours and record.getMessage().startswith("socket.send() raised"))


_QUIET_LOST_SENDS = _QuietLostSends()


def _is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


class _RateLimit:
    """A token bucket shared by every connection, so `bwlimit_kbps` caps the total."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self.burst = max(BLOCK, bytes_per_second / 10)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, size: int) -> None:
        if self.rate <= 0:
            return
        async with self.lock:  # first come, first served across connections
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= size
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens / self.rate)


class _InFlight:
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
class _Session:
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


class _Pool:
    """Up to `size` sessions, opened on demand and reused; broken ones are dropped."""

    def __init__(self, connect: Callable[[], Awaitable[_Session]], size: int) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Session] = []

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Session]:
        async with self._slots:
            session = await self._take()
            try:
                yield session
            finally:
                if session.usable():
                    self._idle.append(session)
                else:
                    session.conn.abort()

    async def _take(self) -> _Session:
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


class SftpTransport:
    """The webserver's root over SFTP; thread-safe (uploads run from several workers)."""

    features = Features(atomic_rename=True, fsync=True)

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        root: str,
        known_hosts: Path,
        key_file: Path | None,
        key_passphrase: str | None = None,
        password: str | None = None,
        connections: int = 4,
        verify: str = "size",
        bwlimit_kbps: int = 0,
        timeout: float = 30,
        file_mode: int = 0o644,
        dir_mode: int = 0o755,
    ) -> None:
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
        self.host, self.port, self.user = host, port, user
        self.root = posixpath.normpath(root) if root else "."
        self.known_hosts = known_hosts
        self.key_file = key_file
        self._passphrase = key_passphrase
        self._password = password
        self.connections = max(1, connections)
        self.verify = verify
        self.bwlimit_kbps = bwlimit_kbps
        self.timeout = timeout
        self.file_mode, self.dir_mode = file_mode, dir_mode
        self._where = f"{host}:{port}"
        self._key: asyncssh.SSHKey | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # The rest belongs to the loop thread.
        self._pool = _Pool(self._connect, self.connections)
        self._limit = _RateLimit(bwlimit_kbps * 1000 / 8)
        self._jobs: set[asyncio.Task[Any]] = set()
        self._folders: set[str] = set()  # known to exist: no stat per file
        self._writing: set[str] = set()  # our temporaries in flight, which sweep leaves
        self._said: set[str] = set()
        self._posix_rename = True
        self._fsync = True

    def __repr__(self) -> str:  # never the password or the passphrase
        return f"SftpTransport({self.user}@{self._where}:{self.root})"

    # --- the synchronous surface -------------------------------------------------------

    def probe(self) -> None:
        """DestinationDown when the server refuses work; TransientError when it cannot be
        reached (server down, timeout): the daemon leaves that to the uploads' retries."""
        self._call(self.root, self._probe)

    def put(
        self,
        local: Path,
        remote: str,
        *,
        sha256: str,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        target = self._path(remote)
        try:
            source = local.open("rb")
        except OSError as exc:
            raise TransientError(f"cannot read {local}: {exc.strerror}") from exc
        with source:
            check = sha256 if self.verify == "sha256" else None
            self._call(
                target,
                lambda s: self._upload(s, source, target, sha256, check, should_stop),
            )

    def write_bytes(self, remote: str, data: bytes) -> None:
        target = self._path(remote)
        digest = hashlib.sha256(data).hexdigest()
        source = io.BytesIO(data)
        self._call(target, lambda s: self._upload(s, source, target, digest, None, lambda: False))

    def remove(self, remote: str) -> None:
        target = self._path(remote)
        self._call(target, lambda s: self._remove(s, target))

    def sweep(self, folders: Iterable[str]) -> int:
        paths = [self._path(folder) for folder in folders]
        return self._call(self.root, lambda s: self._sweep(s, paths))

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(self.timeout + 10)
        except Exception as exc:  # closing must not fail the agent's own shutdown
            log.warning(kv("sftp-close", host=self._where, error=repr(exc)))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    # --- the loop thread ---------------------------------------------------------------

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                logging.getLogger("asyncio").addFilter(_QUIET_LOST_SENDS)  # added once
                self._pool = _Pool(self._connect, self.connections)
                self._limit = _RateLimit(self.bwlimit_kbps * 1000 / 8)
                self._thread = threading.Thread(
                    target=loop.run_forever, name=f"{_THREAD_PREFIX}{self._where}", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def _call(self, path: str, work: Callable[[_Session], Awaitable[T]]) -> T:
        """Run `work` with a pooled session in the loop thread; wait for its result."""
        future = asyncio.run_coroutine_threadsafe(self._job(path, work), self._start_loop())
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise Interrupted(f"{self._where}: the transport was closed") from None

    async def _job(self, path: str, work: Callable[[_Session], Awaitable[T]]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._jobs.add(task)
        try:
            async with self._pool.session() as session:
                try:
                    return await work(session)
                except _LIBRARY_ERRORS as exc:
                    if not isinstance(exc, asyncssh.SFTPError) or isinstance(exc, _LOST):
                        session.broken = True
                    raise await self._classify(exc, session, path) from exc
        finally:
            self._jobs.discard(task)

    async def _shutdown(self) -> None:
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await self._pool.close(self.timeout)
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        # getaddrinfo runs in the default executor: its threads must not outlive us.
        await asyncio.get_running_loop().shutdown_default_executor()

    async def _op(self, step: Awaitable[T]) -> T:
        """One request with a deadline."""
        return await asyncio.wait_for(step, self.timeout)

    async def _quietly(self, step: Callable[[], Awaitable[object]]) -> None:
        """Best-effort clean-up after a failure, which must not hide the failure."""
        with suppress(*_LIBRARY_ERRORS):
            await asyncio.wait_for(step(), min(self.timeout, 5))

    def _say_once(self, event: str, **fields: object) -> None:
        if event not in self._said:
            self._said.add(event)
            log.warning(kv(event, host=self._where, **fields))

    # --- connections -------------------------------------------------------------------

    async def _connect(self) -> _Session:
        if not self.known_hosts.is_file():
            raise DestinationDown(self._host_key_hint() + " (the file does not exist)")
        try:
            conn = await asyncssh.connect(
                self.host,
                self.port,
                username=self.user,
                known_hosts=str(self.known_hosts),  # never auto-added: trust-host writes it
                client_keys=self._client_keys(),
                password=self._password,
                # Deterministic: no agent, no ~/.ssh/config, no default keys or CA bundles.
                agent_path=None,
                config=None,
                x509_trusted_certs=None,
                gss_auth=False,
                gss_kex=False,
                host_based_auth=False,
                pkcs11_provider=None,
                encryption_algs=_CIPHERS,
                connect_timeout=self.timeout,
                keepalive_interval=KEEPALIVE_SECONDS,
                keepalive_count_max=KEEPALIVE_COUNT,
            )
        except _LIBRARY_ERRORS as exc:
            raise self._connection_error(exc, self.root) from exc
        try:
            sftp = await self._op(conn.start_sftp_client())
        except BaseException as exc:
            conn.abort()
            if isinstance(exc, _LIBRARY_ERRORS):
                raise self._connection_error(exc, self.root) from exc
            raise
        log.debug(kv("sftp-connected", host=self._where, user=self.user))
        return _Session(conn, sftp)

    def _client_keys(self) -> list[asyncssh.SSHKey] | None:
        if self.key_file is None:
            return None  # password only
        if self._key is None:
            try:
                self._key = asyncssh.read_private_key(self.key_file, self._passphrase)
            except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
                raise DestinationDown(f"cannot load the client key {self.key_file}: {exc}") from exc
        return [self._key]

    def _host_key_hint(self) -> str:
        name = host_pattern(self.host, self.port)
        if known_keys(self.known_hosts, self.host, self.port):
            return (
                f"host key of {name} does not match {self.known_hosts}: the server changed "
                "or someone is in the middle; verify, then `recsync trust-host`"
            )
        return (
            f"host key of {name} is not in {self.known_hosts}: "
            "check its fingerprint and run `recsync trust-host`"
        )

    def _connection_error(self, exc: BaseException, path: str) -> AgentError:
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return DestinationDown(self._host_key_hint())
        if isinstance(exc, asyncssh.PermissionDenied):
            return DestinationDown(
                f"{self._where} refused the login of {self.user}: check key_file (or the "
                "password) and the webserver's authorized_keys"
            )
        if isinstance(exc, _MISCONFIGURED):
            return DestinationDown(f"{self._where}: {exc}")
        if isinstance(exc, TimeoutError):
            return TransientError(f"{self._where} {path}: no answer within {self.timeout:g} s")
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        return TransientError(f"{self._where} {path}: {reason}")

    async def _classify(self, exc: BaseException, session: _Session, path: str) -> AgentError:
        """Our error for what asyncssh or the network raised while working on `path`."""
        where = f"{self._where} {path}"
        if isinstance(exc, _REFUSED):  # nothing else will succeed there either
            return DestinationDown(f"permission denied on {where}: {exc.reason}")
        if isinstance(exc, _DISK):  # OpenSSH reports ENOSPC as a generic failure
            problem = await self._space_problem(session) if session.usable() else None
            if problem:
                return DestinationDown(problem)
            if not isinstance(exc, asyncssh.SFTPFailure):
                return DestinationDown(f"remote disk full on {where}: {exc.reason}")
            return TransientError(f"{where}: {exc.reason}")
        if isinstance(exc, _BAD_NAME):
            return PermanentError(f"{where}: {exc.reason}")
        return self._connection_error(exc, path)

    async def _space_problem(self, session: _Session) -> str | None:
        try:
            space = await self._op(disk_space(session.sftp, self.root))
        except _LIBRARY_ERRORS:
            return None
        if space is None:
            return None
        if space.read_only:
            return f"remote file system of {self.root} on {self._where} is read-only"
        if space.full:
            free = f"{space.free_bytes} bytes free in {self.root}"
            return f"remote disk full on {self._where}: {free}"
        return None

    # --- the work ----------------------------------------------------------------------

    def _path(self, remote: str) -> str:
        return posixpath.join(self.root, check_remote(remote))

    async def _probe(self, session: _Session) -> None:
        if not await self._is_dir(session, self.root):
            raise DestinationDown(f"root {self.root} does not exist on {self._where}")
        problem = await self._space_problem(session)
        if problem:
            raise DestinationDown(problem)
        probe = posixpath.join(self.root, f"{TEMP_PREFIX}probe{TEMP_SUFFIX}")
        try:
            file = await self._op(session.sftp.open(probe, "wb"))
            await self._op(file.close())
            await self._op(session.sftp.remove(probe))
        except _REFUSED as exc:
            raise DestinationDown(f"cannot write in {self.root} on {self._where}: {exc}") from exc

    async def _upload(
        self,
        session: _Session,
        source: BinaryIO,
        target: str,
        expect: str,
        check: str | None,
        should_stop: Callable[[], bool],
    ) -> None:
        """Temp name beside `target`, written, verified, renamed over it; or no trace."""
        folder = posixpath.dirname(target)
        await self._make_folders(session, folder)
        temp = posixpath.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        self._writing.add(temp)
        try:
            await self._write_temp(session, source, temp, expect, should_stop)
            if check is not None and await self._remote_sha256(session, temp) != check:
                raise TransientError(f"{self._where} {temp}: the copy's sha256 differs")
            crash_point("upload:before-rename")
            await self._rename(session, temp, target)
        except BaseException:
            if session.usable():
                await self._quietly(lambda: session.sftp.remove(temp))
            raise
        finally:
            self._writing.discard(temp)

    async def _make_folders(self, session: _Session, folder: str) -> None:
        if folder in self._folders:
            return
        missing: list[str] = []
        cursor = folder
        while not await self._is_dir(session, cursor):
            if cursor == self.root:
                raise DestinationDown(f"root {self.root} does not exist on {self._where}")
            missing.append(cursor)
            cursor = posixpath.dirname(cursor)
        for path in reversed(missing):
            try:
                attrs = asyncssh.SFTPAttrs(permissions=self.dir_mode)
                await self._op(session.sftp.mkdir(path, attrs))
            except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
                if await self._is_dir(session, path):
                    continue  # a parallel upload made it first
                raise
            # Exactly dir_mode, whatever the server's umask.
            await self._op(session.sftp.chmod(path, self.dir_mode))
        self._folders.add(folder)

    async def _is_dir(self, session: _Session, path: str) -> bool:
        try:
            attrs = await self._op(session.sftp.stat(path))
        except asyncssh.SFTPNoSuchFile:
            return False
        return stat.S_ISDIR(attrs.permissions or 0)

    async def _open_temp(self, session: _Session, temp: str) -> asyncssh.SFTPClientFile:
        attrs = asyncssh.SFTPAttrs(permissions=0o600)  # private until complete
        # block_size=None: each write() is one request, sent at once (we pipeline them).
        opening = functools.partial(session.sftp.open, temp, "xb", attrs, block_size=None)
        try:
            return await self._op(opening())
        except asyncssh.SFTPNoSuchFile:  # the folder was removed since we made it
            folder = posixpath.dirname(temp)
            self._folders.discard(folder)
            await self._make_folders(session, folder)
            return await self._op(opening())

    async def _write_temp(
        self,
        session: _Session,
        source: BinaryIO,
        temp: str,
        expect: str,
        should_stop: Callable[[], bool],
    ) -> None:
        file = await self._open_temp(session, temp)
        requests = _InFlight(self.timeout)
        try:
            sent, digest = await self._send(
                file, source, session.block_size, requests, should_stop, temp
            )
            if digest != expect:
                raise TransientError(f"{temp}: the staged file changed while it was sent")
            # Requests go out in the order they are made and the server answers them in
            # order: fsync, chmod (exact, whatever the server's umask), fstat and close
            # queued behind the writes cost one round trip together, not four.
            requests.send(self._sync(file))
            requests.send(file.chmod(self.file_mode))
            attrs = requests.send(file.stat())
            requests.send(file.close())
            await requests.settle()
        except BaseException:
            await requests.cancel()
            await self._quietly(file.close)
            raise
        if attrs.result().size != sent:
            size = attrs.result().size
            raise TransientError(f"{self._where} {temp}: {size} bytes arrived, {sent} sent")

    async def _send(
        self,
        file: asyncssh.SFTPClientFile,
        source: BinaryIO,
        block_size: int,
        requests: _InFlight,
        should_stop: Callable[[], bool],
        temp: str,
    ) -> tuple[int, str]:
        """Pipelined writes, up to MAX_REQUESTS in flight; `should_stop` asked per block.
        Returns the size sent and its sha256."""
        digest = hashlib.sha256()
        offset = 0
        while block := source.read(block_size):
            if should_stop():
                raise Interrupted(f"stopped while writing {temp}")
            digest.update(block)
            await self._limit.take(len(block))
            await requests.settle(MAX_REQUESTS - 1)
            requests.send(file.write(block, offset))
            offset += len(block)
        return offset, digest.hexdigest()

    async def _sync(self, file: asyncssh.SFTPClientFile) -> None:
        if not self._fsync:
            return
        try:
            await file.fsync()
        except asyncssh.SFTPOpUnsupported:
            self._fsync = False
            self._say_once("sftp-no-fsync", note="files are not forced to disk before rename")

    async def _remote_sha256(self, session: _Session, path: str) -> str:
        if session.can_exec:
            digest = await self._sha256_by_command(session, path)
            if digest is not None:
                return digest
            session.can_exec = False
            self._say_once("sftp-verify-read-back", note="no sha256sum over ssh: reading back")
        return await self._sha256_by_reading(session, path)

    async def _sha256_by_command(self, session: _Session, path: str) -> str | None:
        """`sha256sum` in the session's shell; None where the account runs no commands."""
        shell = session.shell or await self._start_shell(session)
        if shell is None:
            return None
        # One tagged line per request, whatever else the account's shell start-up prints.
        shell.stdin.write(f'echo "recsync $(sha256sum -- {shlex.quote(path)} 2>&1)"\n')
        try:
            while line := await self._op(shell.stdout.readline()):
                if line.startswith(_TAG):
                    found = _SHA256SUM.match(line[len(_TAG) :])
                    return found.group(1) if found else None
        except TimeoutError:  # a shell that never answers: read the file back instead
            shell.close()
            session.shell = None
        return None  # the shell ended: an SFTP-only account or no login shell

    async def _start_shell(self, session: _Session) -> asyncssh.SSHClientProcess[str] | None:
        """A `sh` kept open per connection: a new exec per file would cost a login each."""
        try:
            session.shell = await self._op(
                session.conn.create_process("sh", encoding="utf-8", errors="replace")
            )
        except asyncssh.ChannelOpenError:
            return None
        return session.shell

    async def _sha256_by_reading(self, session: _Session, path: str) -> str:
        digest = hashlib.sha256()
        file = await self._op(
            session.sftp.open(path, "rb", block_size=BLOCK, max_requests=MAX_REQUESTS)
        )
        try:
            offset = 0
            # Opened without an encoding, the file reads bytes (asyncssh types it AnyStr).
            while chunk := cast(bytes, await self._op(file.read(READ_CHUNK, offset))):
                digest.update(chunk)
                offset += len(chunk)
        finally:
            await self._quietly(file.close)
        return digest.hexdigest()

    async def _rename(self, session: _Session, temp: str, target: str) -> None:
        if self._posix_rename:
            try:
                await self._op(session.sftp.posix_rename(temp, target))
                return
            except asyncssh.SFTPOpUnsupported:
                self._posix_rename = False
                self._say_once("sftp-no-posix-rename", note="remove + rename instead")
        # Plain SFTP rename refuses to replace: the old version is briefly absent.
        with suppress(asyncssh.SFTPNoSuchFile):
            await self._op(session.sftp.remove(target))
        await self._op(session.sftp.rename(temp, target))

    async def _remove(self, session: _Session, target: str) -> None:
        with suppress(asyncssh.SFTPNoSuchFile):
            await self._op(session.sftp.remove(target))

    async def _sweep(self, session: _Session, folders: list[str]) -> int:
        removed = 0
        for folder in folders:
            try:
                names = await self._op(session.sftp.listdir(folder))
            except asyncssh.SFTPNoSuchFile:
                continue
            for name in map(str, names):
                temp = posixpath.join(folder, name)
                if _is_temp(name) and temp not in self._writing:
                    await self._remove(session, temp)
                    removed += 1
        return removed
