"""Opening one SFTP session: pinned host keys, the client key or password, the ciphers.

Also what a failed connection means for the agent: an unknown or changed host key, a
refused login or no common algorithm stop the destination (DestinationDown: a person must
act); a timeout or a reset is transient.
"""

from __future__ import annotations

from pathlib import Path

import asyncssh

from agent.errors import AgentError, DestinationDown, TransientError
from agent.transport.sftp_session import LIBRARY_ERRORS, Session, deadline
from agent.transport.sshkeys import host_pattern, known_keys

KEEPALIVE_SECONDS = 15
KEEPALIVE_COUNT = 3
# AES-GCM first: hardware AES through one OpenSSL call per packet, where asyncssh's
# chacha20-poly1305 (OpenSSH's first choice) costs several Python calls per packet.
_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]
_MISCONFIGURED = (asyncssh.KeyExchangeFailed, asyncssh.ProtocolNotSupported)


class Login:
    """How to reach and authenticate to one server; `connect` opens a new session."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        known_hosts: Path,
        key_file: Path | None,
        key_passphrase: str | None,
        password: str | None,
        timeout: float,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.known_hosts = known_hosts
        self.key_file = key_file
        self._passphrase = key_passphrase
        self._password = password
        self.timeout = timeout
        self.where = f"{host}:{port}"
        self._key: asyncssh.SSHKey | None = None

    def __repr__(self) -> str:  # never the password or the passphrase
        return f"Login({self.user}@{self.where})"

    @property
    def has_secret(self) -> bool:
        """A password or a key passphrase: what OpenSSH's client cannot be given."""
        return self._password is not None or self._passphrase is not None

    async def connect(self, root: str) -> Session:
        """A new session; errors already classified (`root` names the place in them)."""
        if not self.known_hosts.is_file():
            raise DestinationDown(self.host_key_hint() + " (the file does not exist)")
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
                # Recordings are audio that zlib cannot shrink: it would only cost CPU
                # (asyncssh before 2.18 offered compression first).
                compression_algs=["none"],
                connect_timeout=self.timeout,
                keepalive_interval=KEEPALIVE_SECONDS,
                keepalive_count_max=KEEPALIVE_COUNT,
            )
        except LIBRARY_ERRORS as exc:
            raise self.error(exc, root) from exc
        try:
            sftp = await deadline(conn.start_sftp_client(), self.timeout)
        except BaseException as exc:
            conn.abort()
            if isinstance(exc, LIBRARY_ERRORS):
                raise self.error(exc, root) from exc
            raise
        return Session(conn, sftp)

    def error(self, exc: BaseException, path: str) -> AgentError:
        """Our error for a failure to connect, or for a connection lost while on `path`."""
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return DestinationDown(self.host_key_hint())
        if isinstance(exc, asyncssh.PermissionDenied):
            return DestinationDown(
                f"{self.where} refused the login of {self.user}: check key_file (or the "
                "password) and the webserver's authorized_keys"
            )
        if isinstance(exc, _MISCONFIGURED):
            return DestinationDown(f"{self.where}: {exc}")
        if isinstance(exc, TimeoutError):
            return TransientError(f"{self.where} {path}: no answer within {self.timeout:g} s")
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        return TransientError(f"{self.where} {path}: {reason}")

    def _client_keys(self) -> list[asyncssh.SSHKey] | None:
        if self.key_file is None:
            return None  # password only
        if self._key is None:
            try:
                self._key = asyncssh.read_private_key(self.key_file, self._passphrase)
            except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
                raise DestinationDown(f"cannot load the client key {self.key_file}: {exc}") from exc
        return [self._key]

    def host_key_hint(self) -> str:
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
