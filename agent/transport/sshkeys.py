"""The SSH keys behind `recsync trust-host` and `recsync keygen`, and known_hosts lookups.

known_hosts uses OpenSSH's format, so an admin can read, edit or pre-seed it with
`ssh-keyscan`; a port other than 22 is written as `[host]:port`, as OpenSSH does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import asyncssh

from agent.errors import TransientError

KEY_TYPE = "ssh-ed25519"


def host_pattern(host: str, port: int) -> str:
    """How known_hosts names `host` at `port`."""
    return host if port == 22 else f"[{host}]:{port}"


def host_key_of(host: str, port: int, timeout: float = 10) -> asyncssh.SSHKey:
    """The host key `host:port` presents now (for `trust-host` to show and store)."""

    async def fetch() -> asyncssh.SSHKey | None:
        # config=None: the agent's user ssh_config must not redirect or alter the lookup.
        return await asyncio.wait_for(
            asyncssh.get_server_host_key(host, port, config=None), timeout
        )

    try:
        key = asyncio.run(fetch())
    except (OSError, asyncssh.Error) as exc:  # TimeoutError is an OSError
        raise TransientError(f"cannot read the host key of {host}:{port}: {exc}") from exc
    if key is None:
        raise TransientError(f"{host}:{port} presented no host key")
    return key


def fingerprint(key: asyncssh.SSHKey) -> str:
    """`SHA256:…`, as `ssh-keygen -l` and OpenSSH's prompts show it."""
    return key.get_fingerprint("sha256")


def known_hosts_entry(host: str, port: int, key: asyncssh.SSHKey) -> str:
    """One known_hosts line for `key`, without the key's comment."""
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{host_pattern(host, port)} {algorithm} {blob}"


def known_keys(known_hosts: Path, host: str, port: int) -> list[asyncssh.SSHKey]:
    """The host keys `known_hosts` trusts for `host:port` (empty when the file is missing)."""
    if not known_hosts.is_file():
        return []
    keys = asyncssh.match_known_hosts(str(known_hosts), host, "", port)[0]
    return list(keys)


def _names_pattern(names: str, pattern: str) -> bool:
    """Whether a known_hosts host field (plain list or one hashed name) names `pattern`."""
    if names.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(part) for part in names[3:].split("|", 1))
        except ValueError:
            return False
        mac = hmac.new(salt, pattern.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(mac, digest)
    return pattern in names.split(",")


def _without_pattern(line: str, pattern: str) -> str | None:
    """`line` with `pattern` taken out of its host field; None when nothing is left."""
    fields = line.split()
    if not fields or fields[0].startswith(("#", "@")) or not _names_pattern(fields[0], pattern):
        return line  # comments, markers and other hosts stay as they are
    if fields[0].startswith("|1|"):
        return None
    names = [name for name in fields[0].split(",") if name != pattern]
    return " ".join([",".join(names), *fields[1:]]) if names else None


def _make_parents(folder: Path) -> None:
    """Create missing folders, private (0700): known_hosts often sits in a home or state dir."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=0o700)


def _write_atomically(path: Path, text: str, mode: int) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("x") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        if path.exists():  # keep the owner the service runs as when root edits the file
            st = path.stat()
            os.chown(temp, st.st_uid, st.st_gid)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def trust(known_hosts: Path, host: str, port: int, key: asyncssh.SSHKey) -> None:
    """Make `key` the one key known_hosts trusts for `host:port`, replacing older entries."""
    pattern = host_pattern(host, port)
    _make_parents(known_hosts.parent)
    lines = known_hosts.read_text().splitlines() if known_hosts.exists() else []
    kept = [kept for line in lines if (kept := _without_pattern(line, pattern)) is not None]
    kept.append(known_hosts_entry(host, port, key))
    _write_atomically(known_hosts, "\n".join(kept) + "\n", 0o644)


def keygen(private: Path, comment: str) -> str:
    """Create the agent's ed25519 key pair; return the public line for authorized_keys.

    An existing private key is never overwritten (FileExistsError): the webserver trusts it.
    """
    key = asyncssh.generate_private_key(KEY_TYPE, comment=comment)
    _make_parents(private.parent)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key("openssh"))
        out.flush()
        os.fsync(out.fileno())
    public = key.export_public_key("openssh").decode().strip()
    public_path = private.with_name(private.name + ".pub")
    _write_atomically(public_path, public + "\n", 0o644)
    return public
