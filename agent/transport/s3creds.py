"""Where S3 credentials come from: the config's key id and secret file, else the AWS
SDKs' default chain, the first place that has them:

1. the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN);
2. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials),
   section [NAME] of the profile AWS_PROFILE or "default";
3. the shared config file (AWS_CONFIG_FILE or ~/.aws/config), section [profile NAME],
   or [default] for the default profile;
4. the container role (ECS task role, EKS pod identity), agent/transport/s3roles.py;
5. the EC2 instance role, through IMDSv2.

The two files give static keys only (aws_access_key_id, aws_secret_access_key,
aws_session_token): profiles that need SSO, assume-role (role_arn) or credential_process
are not followed, and the "no credentials" message says so. The environment and the files
are read at each request (a file is parsed again only when it changed), so rotated keys
are used without a restart; role credentials are cached until shortly before they expire.
"""

from __future__ import annotations

import configparser
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, Protocol

from agent.errors import DestinationDown
from agent.secrets import read_secret
from agent.transport.s3client import Credentials
from agent.transport.s3roles import TIMEOUT, ContainerRole, InstanceRole, RoleCache

# Profile keys of what is not followed: named when a profile holds only these.
_NOT_FOLLOWED = ("role_arn", "credential_process", "sso_session", "sso_start_url")


class Source(Protocol):
    def __call__(self) -> Credentials | None: ...

    def where(self) -> str:
        """The place, for the "no credentials" message (never a secret)."""


def credential_chain(
    access_key_id: str | None,
    secret_file: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    timeout: float = TIMEOUT,
) -> Callable[[], Credentials]:
    """What S3Client calls at each signed request: keep it cheap. `environ`, `clock` and
    `timeout` (of each metadata request) are for tests."""
    if access_key_id is not None and secret_file is not None:
        return lambda: Credentials(access_key_id, read_secret(secret_file))
    return DefaultChain(os.environ if environ is None else environ, clock=clock, timeout=timeout)


class DefaultChain:
    def __init__(
        self, environ: Mapping[str, str], *, clock: Callable[[], float], timeout: float
    ) -> None:
        self.sources: tuple[Source, ...] = (
            Environment(environ),
            ProfileFile(environ, "credentials"),
            ProfileFile(environ, "config"),
            RoleCache(ContainerRole(environ, timeout=timeout), clock=clock),
            RoleCache(InstanceRole(environ, timeout=timeout), clock=clock),
        )

    def __call__(self) -> Credentials:
        for source in self.sources:
            found = source()
            if found is not None:
                return found
        raise DestinationDown(
            "no S3 credentials: set destination.access_key_id and secret_access_key_file,"
            " or give them in one of: " + "; ".join(source.where() for source in self.sources)
        )


class Environment:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def __call__(self) -> Credentials | None:
        key = self.environ.get("AWS_ACCESS_KEY_ID")
        secret = self.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            return None
        return Credentials(key, secret, self.environ.get("AWS_SESSION_TOKEN") or None)

    def where(self) -> str:
        return "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment"


class ProfileFile:
    """A profile's static keys in the shared credentials file ([NAME]) or the shared
    config file ([profile NAME]; [default] for the default profile)."""

    def __init__(self, environ: Mapping[str, str], kind: Literal["credentials", "config"]):
        self.environ = environ
        self.kind = kind
        credentials = kind == "credentials"
        self.variable = "AWS_SHARED_CREDENTIALS_FILE" if credentials else "AWS_CONFIG_FILE"
        # (path, mtime, size, inode) of the last parse, and its sections
        self._parsed: tuple[tuple[object, ...], configparser.RawConfigParser | None] = ((), None)

    def __call__(self) -> Credentials | None:
        section = self._section()
        if section is None:
            return None
        key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
        if not key or not secret:
            return None
        return Credentials(key, secret, section.get("aws_session_token") or None)

    def where(self) -> str:
        section = self._section() or {}
        followed = [name for name in _NOT_FOLLOWED if name in section]
        note = f" (holds {', '.join(followed)}: only static keys are read)" if followed else ""
        return f"profile {self._profile()!r} in {self._path()}{note}"

    def _profile(self) -> str:
        return self.environ.get("AWS_PROFILE") or "default"

    def _path(self) -> Path:
        named = self.environ.get(self.variable)
        if named:
            return Path(named).expanduser()
        return Path(self.environ.get("HOME") or Path.home()) / ".aws" / self.kind

    def _section(self) -> Mapping[str, str] | None:
        parser = self._parser(self._path())
        if parser is None:
            return None
        profile = self._profile()
        if self.kind == "credentials":
            names = [profile]
        elif profile == "default":
            names = ["default", "profile default"]
        else:
            names = [f"profile {profile}"]
        for name in names:
            if parser.has_section(name):
                return parser[name]
        return None

    def _parser(self, path: Path) -> configparser.RawConfigParser | None:
        """The file's sections, parsed again only when the file changed: this runs at every
        request."""
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (path, st.st_mtime_ns, st.st_size, st.st_ino)
        if self._parsed[0] == stamp:
            return self._parsed[1]
        parser = configparser.RawConfigParser(strict=False)  # repeated sections merge
        found: configparser.RawConfigParser | None = parser
        try:
            parser.read_string(path.read_text())
        except (OSError, UnicodeDecodeError, configparser.Error):
            found = None  # unreadable or not INI: as if absent
        self._parsed = (stamp, found)
        return found
