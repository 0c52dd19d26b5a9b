"""A destination folder on this machine (a mounted share, or the demo's output)."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from agent.durable import fsync_dir
from agent.errors import DestinationDown, Interrupted, PermanentError, TransientError
from agent.testhooks import crash_point
from agent.transport import TEMP_PREFIX, TEMP_SUFFIX, Features, RemoteFile, check_remote

CHUNK = 1 << 20
# Errors of the whole destination: every other file would fail the same way.
_DESTINATION_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_FILE_ERRNOS = {errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR}


# A read-only file system that is not: the service's sandbox (ProtectSystem=strict).
_SANDBOX_HINT = (
    " (as the systemd service: outside the unit's ReadWritePaths; see recsync doctor,"
    " recsync unit-paths --install)"
)


def _because(exc: OSError) -> str:
    reason = str(exc.strerror or exc)
    return reason + _SANDBOX_HINT if exc.errno == errno.EROFS else reason


def _classify(exc: OSError, what: str) -> Exception:
    reason = f"{what}: {_because(exc)}"
    if exc.errno in _DESTINATION_ERRNOS:
        return DestinationDown(reason)
    if exc.errno in _FILE_ERRNOS:
        return PermanentError(reason)
    return TransientError(reason)


_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}


def _link(temp: Path, target: Path) -> None:
    """`temp` under the name `target` only if that name is free (FileExistsError if not).
    A file system without hard links (vfat, some SMB mounts) gets a rename after a look:
    not race-free, but no worse than the read-then-write check the caller also makes."""
    try:
        os.link(temp, target)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if target.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(target)) from exc
        os.replace(temp, target)
        return
    temp.unlink()


class LocalTransport:
    @property
    def features(self) -> Features:
        return Features(
            parallel=1,
            atomic_replace=True,
            fsync=True,
            verify="sha256",
            create_bytes=self.create_bytes,
        )

    def __init__(self, *, root: Path) -> None:
        self.root = root

    def _target(self, remote: str) -> Path:
        return self.root / check_remote(remote)

    def _make_folder(self, folder: Path) -> None:
        missing = []
        cursor = folder
        while not cursor.exists() and cursor != self.root:
            missing.append(cursor)
            cursor = cursor.parent
        folder.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):  # make each new folder's entry durable
            fsync_dir(created.parent)

    @contextmanager
    def _temporary(
        self, target: Path, place: Callable[[Path, Path], None] = os.replace
    ) -> Iterator[Path]:
        """A dot-named temporary beside `target`, renamed over it on success."""
        if not self.root.is_dir():  # never made here: a missing mount would fill its parent
            raise DestinationDown(f"destination root {self.root} does not exist")
        self._make_folder(target.parent)
        temp = target.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            yield temp
            crash_point("upload:before-rename")
            place(temp, target)
            fsync_dir(target.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def probe(self) -> None:
        try:
            if not self.root.is_dir():
                raise DestinationDown(f"destination root {self.root} does not exist")
            probe = self.root / f"{TEMP_PREFIX}probe{TEMP_SUFFIX}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise DestinationDown(f"cannot write in {self.root}: {_because(exc)}") from exc

    def put(
        self,
        local: Path,
        remote: str,
        *,
        sha256: str,
        should_stop: Callable[[], bool] = lambda: False,
        metadata: Mapping[str, str] | None = None,  # kept by object stores only
    ) -> None:
        target = self._target(remote)
        try:
            with self._temporary(target) as temp, local.open("rb") as src, temp.open("xb") as dst:
                digest = hashlib.sha256()
                while chunk := src.read(CHUNK):
                    if should_stop():
                        raise Interrupted(f"stopped while writing {remote}")
                    dst.write(chunk)
                    digest.update(chunk)
                dst.flush()
                os.fsync(dst.fileno())
                if digest.hexdigest() != sha256 or dst.tell() != local.stat().st_size:
                    raise TransientError(f"{remote}: copy does not match the staged file")
        except OSError as exc:
            raise _classify(exc, remote) from exc

    def write_bytes(self, remote: str, data: bytes) -> None:
        target = self._target(remote)
        try:
            with self._temporary(target) as temp, temp.open("xb") as dst:
                dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
        except OSError as exc:
            raise _classify(exc, remote) from exc

    def create_bytes(self, remote: str, data: bytes) -> bool:
        """Written whole under a temporary name, then hard-linked to `remote`: link()
        refuses an existing name, so of two agents sharing a mounted root one wins."""
        target = self._target(remote)
        try:
            with self._temporary(target, place=_link) as temp, temp.open("xb") as dst:
                dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
        except FileExistsError:
            return False
        except OSError as exc:
            raise _classify(exc, remote) from exc
        return True

    def read_bytes(self, remote: str) -> bytes | None:
        try:
            return self._target(remote).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _classify(exc, remote) from exc

    def listdir(self, folder: str = "") -> list[str]:
        path = self.root / check_remote(folder) if folder else self.root
        try:
            return sorted(entry.name for entry in path.iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _classify(exc, folder or ".") from exc

    def stat_remote(self, remote: str) -> RemoteFile | None:
        if not self.root.is_dir():  # a lost mount: the copies are not known to be gone
            raise DestinationDown(f"destination root {self.root} does not exist")
        digest = hashlib.sha256()
        try:
            with self._target(remote).open("rb") as file:
                if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                    return None
                size = 0
                while chunk := file.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise _classify(exc, remote) from exc
        return RemoteFile(size, digest.hexdigest())

    def remove(self, remote: str) -> None:
        try:
            self._target(remote).unlink(missing_ok=True)
        except OSError as exc:
            raise _classify(exc, remote) from exc

    def sweep(self, folders: Iterable[str]) -> int:
        removed = 0
        for folder in folders:
            path = self.root / check_remote(folder) if folder else self.root
            if not path.is_dir():
                continue
            for entry in path.iterdir():
                if entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(TEMP_SUFFIX):
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed

    def close(self) -> None:
        pass
