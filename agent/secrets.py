"""Secrets live in their own files, never in the config file, logs or reprs."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def refuse_exposed_secrets(path: Path, mode: int, data: Mapping[str, Any]) -> None:
    """Refuse a config file readable by everyone that holds a secret inline.

    Passwords and keys have their own *_file keys (read_secret checks those files), and
    unknown keys such as `password` are refused by the schema; the one place a secret can
    still sit in the config itself is a URL with a password (https://user:pass@host/).
    """
    if not mode & stat.S_IROTH:
        return
    for key, value in _strings(data):
        try:
            has_password = urlsplit(value).password is not None
        except ValueError:
            continue  # not a URL: the schema says what is wrong with it
        if has_password:
            raise ConfigError(
                f"{path} is readable by everyone and {key} holds a password: "
                f"chmod o-r {path}, or move the credentials out of the URL"
            )


def _strings(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Every string value in a TOML table, with its dotted key (lists: key[i])."""
    found: list[tuple[str, str]] = []
    for name, value in data.items():
        key = f"{prefix}{name}"
        values = value if isinstance(value, list) else [value]
        for i, item in enumerate(values):
            label = f"{key}[{i}]" if isinstance(value, list) else key
            if isinstance(item, str) and "://" in item:
                found.append((label, item))
            elif isinstance(item, Mapping):
                found.extend(_strings(item, f"{label}."))
    return found


def give_to_folder_owner(path: Path) -> None:
    """Run as root, hand a file the CLI just wrote (known_hosts, the key pair) to the owner
    of its folder, the service user, so the agent can still read and replace it."""
    if os.geteuid() != 0:
        return
    owner = path.parent.stat()
    os.chown(path, owner.st_uid, owner.st_gid)
