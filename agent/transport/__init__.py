"""Where shipped recordings go: the Transport protocol and the registry of implementations."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from agent.config import DestinationConfig
from agent.durable import TEMP_PREFIX as TEMP_PREFIX  # re-exported for the transports
from agent.durable import TEMP_SUFFIX as TEMP_SUFFIX
from agent.errors import ConfigError, PermanentError
from agent.secrets import read_secret

if TYPE_CHECKING:
    from agent.transport.s3 import S3Transport
    from agent.transport.s3parts import PartLedger


@dataclass(frozen=True)
class Features:
    """What a destination can do, as data the adapter fills in from what it learned at
    connect or at the first try (restic's `Properties()`, rclone's `fs.Features`). The
    agent sizes its uploads by `parallel`; `doctor` prints the rest."""

    parallel: int = 1  # puts it runs at once
    atomic_replace: bool = True  # a rename replaces the final name in one step
    fsync: bool = True  # files reach the disk before they are renamed into place
    verify: str = "sha256"  # what `put` checks of the arrived copy: "size" or "sha256"
    sha256_by: str = "local"  # how it learns a remote sha256: local, shell, read-back
    # Write a small file only where none exists: True when written, False when a file was
    # there already (left as it was). None: the destination has no such write. An
    # optional method kept here, as rclone's Features keeps its optional calls, so the
    # Transport protocol stays small. A server that ignores the condition overwrites and
    # says True: callers that need it re-check what they read before.
    create_bytes: Callable[[str, bytes], bool] | None = field(
        default=None, compare=False, repr=False
    )

    def describe(self) -> str:
        replace = "atomic replace" if self.atomic_replace else "remove + rename (not atomic)"
        synced = "fsync" if self.fsync else "no fsync"
        return (
            f"{self.parallel} at once, {replace}, {synced}, verifies {self.verify},"
            f" sha256 by {self.sha256_by}"
        )


class RemoteFile(NamedTuple):
    """A file at the destination as it is now: retention checks a copy again before the
    original leaves the spool."""

    size: int
    sha256: str | None  # None where the destination cannot tell (then size alone)


class Transport(Protocol):
    """A destination root holding `YYYY/MM/DD/<file>` and the published pages.

    Remote paths are relative POSIX paths under the root. `put` and `write_bytes` are
    atomic (a temporary dot-name in the target folder, verified, then renamed over the
    final name) and idempotent: putting the same path again replaces it. Errors:
    DestinationDown when the whole destination refuses work (permission on the root,
    disk full), TransientError for what may pass, PermanentError for a fault of one file,
    Interrupted when `should_stop` said so mid-transfer (the partial is removed).
    """

    @property
    def features(self) -> Features:
        """What it can do, as far as it knows now (some of it is learned at connect)."""

    def probe(self) -> None:
        """Raise DestinationDown when the destination refuses work (host key, login,
        permission, missing root, disk full), TransientError when it cannot be reached
        now (down, refused, timeout); return when a file can be written under the root."""

    def put(
        self,
        local: Path,
        remote: str,
        *,
        sha256: str,
        should_stop: Callable[[], bool] = lambda: False,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Ship `local` to `remote`; verify it arrived whole (size and sha256).
        `metadata`: the call's fields, for a destination that keeps them with the object
        (S3's x-amz-meta-*); others ignore it. Untrusted text: the adapter encodes it."""

    def write_bytes(self, remote: str, data: bytes) -> None:
        """Atomically replace `remote` with `data` (manifests, pages)."""

    def read_bytes(self, remote: str) -> bytes | None:
        """The content of a small file the agent published (status.json), None if absent."""

    def listdir(self, folder: str = "") -> list[str]:
        """The names in `folder` ("" is the root), sorted; [] when it does not exist."""

    def stat_remote(self, remote: str) -> RemoteFile | None:
        """`remote`'s size and sha256 as the destination has it now (computed there, read
        back, or the checksum stored with the object), None when it is not there. Costs
        a read of the file on some destinations: for re-verification, not for listings."""

    def remove(self, remote: str) -> None:
        """Delete `remote`; a missing file is not an error."""

    def sweep(self, folders: Iterable[str]) -> int:
        """Delete this agent's temporary files left in `folders` ("" is the root); return
        how many."""

    def close(self) -> None: ...


def check_remote(remote: str) -> str:
    """Refuse a remote path that could leave the root, whatever produced it."""
    normal = posixpath.normpath(remote)
    if (
        not remote
        or remote.startswith("/")
        or normal != remote
        or normal.startswith("..")
        or any(part in ("", ".", "..") for part in remote.split("/"))
        or "\x00" in remote
    ):
        raise PermanentError(f"unsafe remote path {remote!r}")
    return remote


def _sftp(config: DestinationConfig, uploads: PartLedger | None = None) -> Transport:
    from agent.transport.sftp import SftpTransport

    secret = config.password_file
    passphrase = config.key_passphrase_file
    # A password login needs no key; otherwise the key must exist (`recsync keygen`).
    use_key = secret is None or config.key_file.exists()
    assert config.host is not None and config.user is not None
    return SftpTransport(
        host=config.host,
        port=config.port,
        user=config.user,
        root=str(config.root),
        known_hosts=config.known_hosts,
        key_file=config.key_file if use_key else None,
        key_passphrase=read_secret(passphrase) if passphrase else None,
        password=read_secret(secret) if secret else None,
        connections=config.connections,
        verify=config.verify,
        bwlimit_kbps=config.bwlimit_kbps,
        timeout=config.timeout_seconds,
        file_mode=config.file_mode,
        dir_mode=config.dir_mode,
        client=sftp_client(config, use_key=use_key),
    )


def sftp_client(config: DestinationConfig, *, use_key: bool) -> str:
    """Which client pushes the recordings' bytes: OpenSSH's `sftp` (the bytes never pass
    through Python) wherever it can log in on its own, with a key that needs no
    passphrase; "auto" falls back to asyncssh should OpenSSH's login be refused."""
    from agent.transport import sftp_openssh

    alone = use_key and config.password_file is None and config.key_passphrase_file is None
    if config.sftp_client == "asyncssh" or (config.sftp_client == "auto" and not alone):
        return "asyncssh"
    if not sftp_openssh.available():
        if config.sftp_client == "openssh":
            raise ConfigError(
                "destination.sftp_client = 'openssh': no `sftp` command on this host"
                " (install openssh-client, or use 'auto')"
            )
        return "asyncssh"
    return config.sftp_client


def _local(config: DestinationConfig, uploads: PartLedger | None = None) -> Transport:
    from agent.transport.local import LocalTransport

    return LocalTransport(root=config.root)


def s3_transport(config: DestinationConfig, uploads: PartLedger | None = None) -> S3Transport:
    """The s3 destination bare, for what only S3 has (doctor's survey of the server)."""
    from agent.transport.s3 import S3Transport
    from agent.transport.s3creds import credential_chain

    assert config.bucket is not None
    return S3Transport(
        endpoint=config.endpoint,
        region=config.region,
        bucket=config.bucket,
        prefix=config.prefix,
        credentials=credential_chain(config.access_key_id, config.secret_access_key_file),
        addressing=config.addressing_style,
        connections=config.connections,
        timeout=config.timeout_seconds,
        # As the AWS CLI and SDKs: a CA bundle named in the environment, unless configured.
        ca_file=str(config.ca_file) if config.ca_file else os.environ.get("AWS_CA_BUNDLE") or None,
        storage_class=config.storage_class,
        sse=None if config.sse == "none" else config.sse,
        kms_key_id=config.kms_key_id,
        object_tags=config.object_tags,
        bwlimit_kbps=config.bwlimit_kbps,
        multipart_threshold=int(config.multipart_threshold_mb * 10**6),
        uploads=uploads,
    )


# Each makes its transport from the config; `uploads` is used by object storage only.
REGISTRY: dict[str, Callable[[DestinationConfig, PartLedger | None], Transport]] = {
    "local": _local,
    "sftp": _sftp,
    "s3": s3_transport,
}


def as_s3(transport: Transport) -> S3Transport | None:
    """The S3 destination under the wrappers, None for another: presigned links are
    S3's alone, so they stay off the Transport protocol."""
    from agent.transport.s3 import S3Transport

    while not isinstance(transport, S3Transport):
        inner = getattr(transport, "inner", None)  # RetryingTransport's, SiteTransport's
        if inner is None:
            return None
        transport = inner
    return transport


def root_path(transport: Transport, remote: str) -> str:
    """`remote` as the destination's root names it: under the site folder when the
    transport is one site's (what a presigned link must sign)."""
    from agent.transport.scoped import SiteTransport

    while True:
        if isinstance(transport, SiteTransport):
            remote = transport.path(remote)
        inner = getattr(transport, "inner", None)
        if inner is None:
            return remote
        transport = inner


def shared_root(transport: Transport) -> tuple[Transport, str] | None:
    """(the whole root, this agent's site) when `transport` is one site's folder of a
    shared root; None when the agent owns the root alone."""
    from agent.transport.scoped import SiteTransport

    if isinstance(transport, SiteTransport):
        return transport.shared_root, transport.site
    return None


def open_transport(config: DestinationConfig, *, uploads: PartLedger | None = None) -> Transport:
    """The configured destination, wrapped so a passing fault is retried within the call,
    and seen from this agent's site folder with destination.layout = "sites".
    `uploads`: the agent's ledger of multipart uploads (object storage resumes them)."""
    from agent.transport.retry import RetryingTransport
    from agent.transport.scoped import SiteTransport

    transport: Transport = RetryingTransport(REGISTRY[config.type](config, uploads))
    if config.site is not None:
        transport = SiteTransport(transport, site=config.site)
    return transport
