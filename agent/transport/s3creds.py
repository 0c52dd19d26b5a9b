"""Where S3 credentials come from: the config's key id and secret file, else the standard
AWS places — the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)
and the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, the
profile AWS_PROFILE or "default"). Read at each request, so a rotated secret is used
without a restart. Instance and container roles (IMDS, ECS) are not read yet."""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable
from pathlib import Path

from agent.errors import DestinationDown
from agent.secrets import read_secret
from agent.transport.s3client import Credentials


def credential_chain(
    access_key_id: str | None, secret_file: Path | None
) -> Callable[[], Credentials]:
    if access_key_id is not None and secret_file is not None:
        return lambda: Credentials(access_key_id, read_secret(secret_file))
    return from_environment


def from_environment() -> Credentials:
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
        )
    shared = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials")
    profile = env.get("AWS_PROFILE") or "default"
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(shared.read_text())
        section = parser[profile]
        return Credentials(
            section["aws_access_key_id"],
            section["aws_secret_access_key"],
            section.get("aws_session_token"),
        )
    except (OSError, KeyError, configparser.Error):
        raise DestinationDown(
            "no S3 credentials: set destination.access_key_id and secret_access_key_file,"
            f" or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or profile {profile!r} in {shared}"
        ) from None
