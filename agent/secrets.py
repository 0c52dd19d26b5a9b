"""Secrets live in their own files, never in the config file, logs or reprs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.errors import ConfigError


def read_secret(path: Path) -> str:
    """A password or passphrase from its own file, which must not be readable by everyone."""
    try:
        mode = path.stat().st_mode
        if mode & stat.S_IROTH:
            raise ConfigError(f"{path} is readable by everyone: chmod o-r {path}")
        return path.read_text().rstrip("\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc.strerror}") from exc


def give_to_folder_owner(path: Path) -> None:
    """Run as root, hand a file the CLI just wrote (known_hosts, the key pair) to the owner
    of its folder, the service user, so the agent can still read and replace it."""
    if os.geteuid() != 0:
        return
    owner = path.parent.stat()
    os.chown(path, owner.st_uid, owner.st_gid)
