"""A recording's upload through OpenSSH's `sftp` (sftp_openssh), with the guarantees of
the asyncssh path: a temporary name beside the target, fsync, the exact file mode, the
size (and with verify = "sha256" the sha256) checked before the posix-rename, no trace on
failure, and errors classified as the asyncssh path classifies them."""

from __future__ import annotations

import posixpath
import secrets
import stat
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from agent.durable import TEMP_PREFIX, TEMP_SUFFIX
from agent.errors import (
    AgentError,
    DestinationDown,
    Interrupted,
    PermanentError,
    TransientError,
)
from agent.testhooks import crash_point
from agent.transport.sftp_openssh import Client, ClientGone, Clients, Options, ls_listing, quote

GLOB = set("*?[]")  # `put` globs its local argument, quoted or not
DISK_WORDS = ("Failure", "No space", "quota", "Quota")  # OpenSSH says "Failure" on ENOSPC


def can_send(local: Path) -> bool:
    """Whether sftp's parser can take this local path (ours: staging/<id>.<format>)."""
    try:
        quote(str(local))
    except ValueError:
        return False
    return not GLOB & set(str(local))


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """What the upload asks of the asyncssh side (each call runs in its loop thread)."""

    where: str  # user@host:port, for messages
    ensure_folder: Callable[[str], None]
    forget_folder: Callable[[str], None]
    space_problem: Callable[[], str | None]
    sha256_of: Callable[[str], str]
    host_key_problem: Callable[[], str]
    remove: Callable[[str], None]
    orphan: Callable[[str], None]  # a temporary the next session removes
    writing: set[str]  # our temporaries in flight, which a sweep leaves alone


class LoginRefused(DestinationDown):
    """OpenSSH's client could not log in (the key file's mode, a key format it cannot
    read, the account refused it): where it was only preferred, asyncssh takes over."""


class BulkUploads:
    """put() for SftpTransport when the `sftp` client does the byte pushing."""

    def __init__(self, *, options: Options, size: int, file_mode: int, hooks: Hooks) -> None:
        self.options, self.size = options, size
        self.clients = Clients(options, size)
        self.file_mode = file_mode
        self.hooks = hooks

    def close(self) -> None:
        """Ends the clients (uploads in flight: Interrupted); later puts start new ones,
        as the asyncssh side reconnects after a close."""
        clients, self.clients = self.clients, Clients(self.options, self.size)
        clients.close()

    def put(
        self,
        local: Path,
        target: str,
        *,
        size: int,
        check: str | None,
        should_stop: Callable[[], bool],
    ) -> None:
        folder = posixpath.dirname(target)
        temp = posixpath.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        self.hooks.ensure_folder(folder)
        try:
            with self.clients.client() as client:
                self.hooks.writing.add(temp)
                try:
                    self._place(client, local, temp, target, size, check, should_stop)
                except BaseException:
                    self._remove(client, temp)
                    raise
                finally:
                    self.hooks.writing.discard(temp)
        except InterruptedError as exc:
            raise Interrupted(f"{self.hooks.where}: {exc} {temp}") from None

    def _place(
        self,
        client: Client,
        local: Path,
        temp: str,
        target: str,
        size: int,
        check: str | None,
        should_stop: Callable[[], bool],
    ) -> None:
        """Sent, checked, renamed over the target."""
        self._send(client, local, temp, size, should_stop)
        if check is not None and self.hooks.sha256_of(temp) != check:
            raise TransientError(f"{self.hooks.where} {temp}: the copy's sha256 differs")
        crash_point("upload:before-rename")
        (renamed,) = self._run(client, [f"rename {quote(temp)} {quote(target)}"])
        if renamed:
            raise self._error(renamed, target)

    def _send(
        self, client: Client, local: Path, temp: str, size: int, should_stop: Callable[[], bool]
    ) -> None:
        folder = posixpath.dirname(temp)
        # put creates the temporary with the local file's mode (less the server's umask):
        # right in one round trip less than a chmod, which follows only where it is not.
        with suppress(OSError):
            if stat.S_IMODE(local.stat().st_mode) != self.file_mode:
                local.chmod(self.file_mode)
        commands = [
            f"put -f {quote(str(local))} {quote(temp)}",  # -f: fsync@openssh.com after it
            f"ls -ln {quote(temp)}",
        ]
        for attempt in (1, 2):
            sent, listed = self._run(client, commands, should_stop)
            if sent and attempt == 1 and _folder_missing(sent):
                self.hooks.forget_folder(folder)  # removed since we made it: again
                self.hooks.ensure_folder(folder)
                continue
            if sent:
                raise self._error(sent, temp)
            mode, arrived = ls_listing(listed) or (None, None)
            if arrived != size:
                where = f"{self.hooks.where} {temp}"
                raise TransientError(f"{where}: {arrived} bytes arrived, {size} sent")
            if mode != self.file_mode:  # exact, whatever the server's umask
                (changed,) = self._run(client, [f"chmod {self.file_mode:o} {quote(temp)}"])
                if changed:
                    raise self._error(changed, temp)
            return

    def _run(
        self, client: Client, commands: list[str], should_stop: Callable[[], bool] = lambda: False
    ) -> list[list[str]]:
        try:
            outputs = client.exchange(commands, should_stop)
        except ClientGone as exc:
            raise self._gone(exc) from None
        if len(outputs) != len(commands):  # the process ended part-way
            raise TransientError(f"{self.hooks.where}: the sftp client stopped answering")
        return outputs

    def _remove(self, client: Client, temp: str) -> None:
        if client.alive:
            with suppress(ClientGone, InterruptedError):
                client.exchange([f"rm {quote(temp)}"], lambda: False)
                return
        try:
            self.hooks.remove(temp)
        except AgentError:  # the next session removes it
            self.hooks.orphan(temp)

    def _error(self, lines: list[str], path: str) -> AgentError:
        text = " / ".join(lines)
        where = f"{self.hooks.where} {path}"
        if "Permission denied" in text:
            return DestinationDown(f"permission denied on {where}: {text}")
        if "Bad message" in text:  # OpenSSH's answer to a name too long for the server
            return PermanentError(f"{where}: {text}")
        if any(word in text for word in DISK_WORDS):
            problem = self.hooks.space_problem()
            if problem:
                return DestinationDown(problem)
        return TransientError(f"{where}: {text}")

    def _gone(self, exc: ClientGone) -> AgentError:
        text = str(exc)
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION" in text:
            return DestinationDown(self.hooks.host_key_problem())  # asyncssh would agree
        if "Permission denied (" in text or "Load key" in text or "too open" in text:
            return LoginRefused(f"{self.hooks.where} refused the login of OpenSSH's sftp: {text}")
        return TransientError(f"{self.hooks.where}: the sftp client ended: {text}")


def _folder_missing(lines: list[str]) -> bool:
    return any(line.startswith("dest open") and "No such file" in line for line in lines)
