"""Shipping over SFTP with asyncssh, behind the synchronous Transport protocol.

asyncssh runs in one event loop on a daemon thread, started on first use. Each public
method submits a coroutine to it and waits, so the upload worker threads share one pool of
SSH connections (one SFTP client each), opened on demand, reused across files and replaced
when lost. Every request has a deadline: a hung server is a TransientError, not a hang.
The sessions, their pool and request pipelining live in `sftp_session`; logging in and
what a failed connection means in `sftp_login`. This module holds the transport's work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import io
import logging
import posixpath
import secrets
import stat
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import asyncssh

from agent.errors import AgentError, DestinationDown, Interrupted, PermanentError, TransientError
from agent.log import kv
from agent.testhooks import crash_point
from agent.transport import TEMP_PREFIX, TEMP_SUFFIX, Features, RemoteFile, check_remote
from agent.transport.ratelimit import RateLimit
from agent.transport.sftp_bulk import BulkUploads, Hooks, LoginRefused, can_send
from agent.transport.sftp_login import Login
from agent.transport.sftp_openssh import Options
from agent.transport.sftp_session import (
    BAD_NAME,
    BLOCK,
    DISK,
    LIBRARY_ERRORS,
    MAX_REQUESTS,
    QUIET_LOST_SENDS,
    REFUSED,
    THREAD_PREFIX,
    InFlight,
    Pool,
    Session,
    Space,
    breaks_session,
    deadline,
    disk_space,
    quietly,
)

# Space and disk_space are re-exported: _space_problem looks disk_space up here, so a
# test that patches `agent.transport.sftp.disk_space` fakes what the server says.
__all__ = ["SftpTransport", "Space", "disk_space"]

log = logging.getLogger(__name__)
T = TypeVar("T")

VERIFY_MODES = ("size", "sha256")
NO_SHELL = "sftp-verify-read-back"


def _is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


class SftpTransport:
    """The webserver's root over SFTP; thread-safe (uploads run from several workers)."""

    @property
    def features(self) -> Features:
        """Learned from the server: posix-rename and fsync until it says it has none, and
        sha256sum over ssh from the probe (an SFTP-only account reads the copy back)."""
        shell = {True: "shell (sha256sum)", False: "read-back", None: "not yet known"}
        return Features(
            parallel=self.connections,
            atomic_replace=self._posix_rename,
            fsync=self._fsync,
            verify=self.verify,
            sha256_by=shell[self._sha256sum],
        )

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
        client: str = "asyncssh",
    ) -> None:
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
        self.host, self.port, self.user = host, port, user
        self.root = posixpath.normpath(root) if root else "."
        self.known_hosts = known_hosts
        self.key_file = key_file
        self.connections = max(1, connections)
        self.verify = verify
        self.bwlimit_kbps = bwlimit_kbps
        self.timeout = timeout
        self.file_mode, self.dir_mode = file_mode, dir_mode
        self._login = Login(
            host=host,
            port=port,
            user=user,
            known_hosts=known_hosts,
            key_file=key_file,
            key_passphrase=key_passphrase,
            password=password,
            timeout=timeout,
        )
        self._where = self._login.where
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # The rest belongs to the loop thread.
        self._pool = Pool(self._connect, self.connections)
        self._limit = RateLimit(bwlimit_kbps * 1000 / 8, BLOCK)
        self._jobs: set[asyncio.Task[Any]] = set()
        self._folders: set[str] = set()  # known to exist: no stat per file
        self._writing: set[str] = set()  # our temporaries in flight, which sweep leaves
        self._orphans: set[str] = set()  # temporaries a cut connection could not remove
        self._said: set[str] = set()
        self._posix_rename = True
        self._fsync = True
        self._sha256sum: bool | None = None  # does the `sha256sum` command run over ssh? (learned)
        self.client = "openssh" if client == "auto" else client
        self._fall_back = client == "auto"  # to asyncssh, should OpenSSH's client be refused
        self._bulk = self._bulk_uploads() if self.client == "openssh" else None

    def __repr__(self) -> str:  # never the password or the passphrase
        return f"SftpTransport({self.user}@{self._where}:{self.root})"

    def _bulk_uploads(self) -> BulkUploads:
        """Recordings' bytes through OpenSSH's `sftp`; the rest stays on asyncssh."""
        if self.key_file is None or self._login.has_secret:
            raise ValueError("the openssh client logs in with a key without a passphrase only")
        options = Options(
            host=self.host,
            port=self.port,
            user=self.user,
            key_file=self.key_file,
            known_hosts=self.known_hosts,
            timeout=self.timeout,
            bwlimit_kbps=self.bwlimit_kbps // self.connections,  # sftp -l is per process
        )

        def ensure_folder(folder: str) -> None:
            if folder not in self._folders:
                self._call(folder, lambda s: self._make_folders(s, folder))

        def space_problem() -> str | None:
            try:
                return self._call(self.root, self._space_problem)
            except AgentError:
                return None

        def sha256_of(path: str) -> str:
            return self._call(path, lambda s: self._remote_sha256(s, path))

        def remove(path: str) -> None:
            self._call(path, lambda s: self._remove(s, path))

        hooks = Hooks(
            where=self._where,
            ensure_folder=ensure_folder,
            forget_folder=self._folders.discard,
            space_problem=space_problem,
            sha256_of=sha256_of,
            host_key_problem=self._login.host_key_hint,
            remove=remove,
            orphan=self._orphans.add,
            writing=self._writing,
        )
        return BulkUploads(
            options=options, size=self.connections, file_mode=self.file_mode, hooks=hooks
        )

    # --- the synchronous surface -------------------------------------------------------

    def probe(self) -> None:
        """DestinationDown when the server refuses work; TransientError when it cannot be
        reached (server down, timeout): the daemon leaves that to the uploads' retries."""
        self._call(self.root, self._probe)
        if self._bulk is not None:
            self._bulk.clients.warm()

    def put(
        self,
        local: Path,
        remote: str,
        *,
        sha256: str,
        should_stop: Callable[[], bool] = lambda: False,
        metadata: Mapping[str, str] | None = None,  # kept by object stores only
    ) -> None:
        target = self._path(remote)
        check = sha256 if self.verify == "sha256" else None
        bulk = self._bulk
        if bulk is not None and can_send(local):
            if self._orphans:  # what a cut left: every `_call` removes it, and none may come by
                self._call(self.root, self._remove_orphans)
            try:
                size = local.stat().st_size
            except OSError as exc:
                raise TransientError(f"cannot read {local}: {exc.strerror}") from exc
            try:
                bulk.put(local, target, size=size, check=check, should_stop=should_stop)
                return
            except LoginRefused as exc:
                if not self._fall_back:
                    raise
                self._bulk = None
                bulk.close()
                note = "asyncssh pushes the bytes instead"
                log.warning(kv("sftp-openssh-refused", host=self._where, error=str(exc), note=note))
        try:
            source = local.open("rb")
        except OSError as exc:
            raise TransientError(f"cannot read {local}: {exc.strerror}") from exc
        with source:
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

    def read_bytes(self, remote: str) -> bytes | None:
        target = self._path(remote)
        return self._call(target, lambda s: self._read(s, target))

    def listdir(self, folder: str = "") -> list[str]:
        target = self._path(folder) if folder else self.root
        return self._call(target, lambda s: self._list(s, target))

    def stat_remote(self, remote: str) -> RemoteFile | None:
        target = self._path(remote)
        return self._call(target, lambda s: self._stat_remote(s, target))

    def sweep(self, folders: Iterable[str]) -> int:
        paths = [self._path(folder) if folder else self.root for folder in folders]
        return self._call(self.root, lambda s: self._sweep(s, paths))

    def close(self) -> None:
        if self._bulk is not None:
            self._bulk.close()
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
                logging.getLogger("asyncio").addFilter(QUIET_LOST_SENDS)  # added once
                self._pool = Pool(self._connect, self.connections)
                self._limit = RateLimit(self.bwlimit_kbps * 1000 / 8, BLOCK)
                self._thread = threading.Thread(
                    target=loop.run_forever, name=f"{THREAD_PREFIX}{self._where}", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def _call(self, path: str, work: Callable[[Session], Awaitable[T]]) -> T:
        """Run `work` with a pooled session in the loop thread; wait for its result."""
        future = asyncio.run_coroutine_threadsafe(self._job(path, work), self._start_loop())
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise Interrupted(f"{self._where}: the transport was closed") from None

    async def _job(self, path: str, work: Callable[[Session], Awaitable[T]]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._jobs.add(task)
        try:
            async with self._pool.session() as session:
                if self._orphans:
                    await self._remove_orphans(session)
                try:
                    return await work(session)
                except LIBRARY_ERRORS as exc:
                    if breaks_session(exc):
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
        return await deadline(step, self.timeout)

    async def _quietly(self, step: Callable[[], Awaitable[object]]) -> None:
        await quietly(step, self.timeout)

    def _say_once(self, event: str, **fields: object) -> None:
        if event not in self._said:
            self._said.add(event)
            log.warning(kv(event, host=self._where, **fields))

    # --- connections -------------------------------------------------------------------

    async def _connect(self) -> Session:
        session = await self._login.connect(self.root)
        log.debug(kv("sftp-connected", host=self._where, user=self.user))
        return session

    async def _classify(self, exc: BaseException, session: Session, path: str) -> AgentError:
        """Our error for what asyncssh or the network raised while working on `path`."""
        where = f"{self._where} {path}"
        if isinstance(exc, REFUSED):  # nothing else will succeed there either
            return DestinationDown(f"permission denied on {where}: {exc.reason}")
        if isinstance(exc, DISK):  # OpenSSH reports ENOSPC as a generic failure
            problem = await self._space_problem(session) if session.usable() else None
            if problem:
                return DestinationDown(problem)
            if not isinstance(exc, asyncssh.SFTPFailure):
                return DestinationDown(f"remote disk full on {where}: {exc.reason}")
            return TransientError(f"{where}: {exc.reason}")
        if isinstance(exc, BAD_NAME):
            return PermanentError(f"{where}: {exc.reason}")
        return self._login.error(exc, path)

    async def _space_problem(self, session: Session) -> str | None:
        try:
            space = await self._op(disk_space(session.sftp, self.root))
        except LIBRARY_ERRORS:
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

    async def _probe(self, session: Session) -> None:
        if not await self._is_dir(session, self.root):
            raise DestinationDown(f"root {self.root} does not exist on {self._where}")
        problem = await self._space_problem(session)
        if problem:
            raise DestinationDown(problem)
        probe = posixpath.join(self.root, f"{TEMP_PREFIX}probe{TEMP_SUFFIX}")
        try:
            file = await self._op(session.sftp.open(probe, "wb"))
            await self._op(file.close())
            if self._sha256sum is None:  # what the features say, and retention will need
                self._sha256sum = session.can_exec = (
                    await session.sha256_by_command(probe, self.timeout) is not None
                )
                if not self._sha256sum and self.verify == "sha256":
                    self._say_once(NO_SHELL, note="no sha256sum over ssh: reading back")
            await self._op(session.sftp.remove(probe))
        except REFUSED as exc:
            raise DestinationDown(f"cannot write in {self.root} on {self._where}: {exc}") from exc

    async def _upload(
        self,
        session: Session,
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
            else:  # the webserver keeps no dot-files from cuts: the next session removes it
                self._orphans.add(temp)
            raise
        finally:
            self._writing.discard(temp)

    async def _remove_orphans(self, session: Session) -> None:
        for temp in sorted(self._orphans):
            try:
                with suppress(asyncssh.SFTPNoSuchFile):
                    await self._op(session.sftp.remove(temp))
            except LIBRARY_ERRORS:
                return  # this session is no better: the next one tries again
            self._orphans.discard(temp)

    async def _make_folders(self, session: Session, folder: str) -> None:
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

    async def _is_dir(self, session: Session, path: str) -> bool:
        try:
            attrs = await self._op(session.sftp.stat(path))
        except asyncssh.SFTPNoSuchFile:
            return False
        return stat.S_ISDIR(attrs.permissions or 0)

    async def _open_temp(self, session: Session, temp: str) -> asyncssh.SFTPClientFile:
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
        session: Session,
        source: BinaryIO,
        temp: str,
        expect: str,
        should_stop: Callable[[], bool],
    ) -> None:
        file = await self._open_temp(session, temp)
        requests = InFlight(self.timeout)
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
        requests: InFlight,
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

    async def _remote_sha256(self, session: Session, path: str) -> str:
        if session.can_exec and self._sha256sum is not False:
            digest = await session.sha256_by_command(path, self.timeout)
            if digest is not None:
                self._sha256sum = True
                return digest
            session.can_exec = self._sha256sum = False
            self._say_once(NO_SHELL, note="no sha256sum over ssh: reading back")
        return await session.sha256_by_reading(path, self.timeout)

    async def _rename(self, session: Session, temp: str, target: str) -> None:
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

    async def _read(self, session: Session, target: str) -> bytes | None:
        try:
            file = await self._op(session.sftp.open(target, "rb"))
        except asyncssh.SFTPNoSuchFile:
            return None
        try:
            data: bytes = await self._op(file.read())
            return data
        finally:
            await file.close()

    async def _stat_remote(self, session: Session, target: str) -> RemoteFile | None:
        """The size from the server, the sha256 by `sha256sum` over ssh where the account
        runs commands, else by reading the file back."""
        try:
            attrs = await self._op(session.sftp.stat(target))
        except asyncssh.SFTPNoSuchFile:
            return None
        if not stat.S_ISREG(attrs.permissions or 0) or attrs.size is None:
            return None
        try:
            digest = await self._remote_sha256(session, target)
        except asyncssh.SFTPNoSuchFile:  # removed between the stat and the read
            return None
        return RemoteFile(attrs.size, digest)

    async def _list(self, session: Session, target: str) -> list[str]:
        try:
            names = await self._op(session.sftp.listdir(target))
        except asyncssh.SFTPNoSuchFile:
            return []
        return sorted(name for name in map(str, names) if name not in (".", ".."))

    async def _remove(self, session: Session, target: str) -> None:
        with suppress(asyncssh.SFTPNoSuchFile):
            await self._op(session.sftp.remove(target))

    async def _sweep(self, session: Session, folders: list[str]) -> int:
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
