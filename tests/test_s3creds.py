"""Where S3 credentials come from (agent/transport/s3creds.py): the chain's order and the
shared files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.errors import DestinationDown
from agent.transport.s3client import Credentials
from agent.transport.s3creds import credential_chain


def nowhere(tmp_path: Path) -> dict[str, str]:
    """An environment with credentials nowhere: no files."""
    return {"HOME": str(tmp_path)}


def chain(env: dict[str, str]) -> Callable[[], Credentials]:
    return credential_chain(None, None, environ=env)


# --- the shared files, and the order of the chain ---------------------------------------------


def profile(name: str, key: str) -> str:
    return f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = secret-of-{key}\n"


def test_the_environment_comes_before_the_files_and_the_credentials_file_first(
    tmp_path: Path,
) -> None:
    credentials, config = tmp_path / "credentials", tmp_path / "config"
    credentials.write_text(profile("pbx", "FILE"))
    config.write_text(profile("profile pbx", "CONFIG"))
    env = nowhere(tmp_path) | {
        "AWS_ACCESS_KEY_ID": "ENV",
        "AWS_SECRET_ACCESS_KEY": "secret-of-ENV",
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config),
        "AWS_PROFILE": "pbx",
    }
    steps: list[tuple[str, Callable[[], object]]] = [
        ("ENV", lambda: env.pop("AWS_ACCESS_KEY_ID")),
        ("FILE", credentials.unlink),
        ("CONFIG", config.unlink),
    ]
    for expected, take_away in steps:
        assert chain(env)().access_key_id == expected
        take_away()
    with pytest.raises(DestinationDown, match=f"profile 'pbx' in {config}"):
        chain(env)()


@pytest.mark.parametrize(
    ("text", "profile_name", "key"),
    [
        (profile("default", "DEFAULT"), "default", "DEFAULT"),
        (profile("profile default", "PDEFAULT"), "default", "PDEFAULT"),
        (profile("profile pbx", "PBX") + profile("pbx", "BARE"), "pbx", "PBX"),
        (profile("pbx", "BARE"), "pbx", None),  # [NAME] is the credentials file's form
        (profile("default", "X") + "aws_session_token = tok\n", "default", "X"),
    ],
)
def test_config_file_sections(
    tmp_path: Path, text: str, profile_name: str, key: str | None
) -> None:
    config = tmp_path / "config"
    config.write_text(text)
    env = nowhere(tmp_path) | {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": profile_name}
    if key is None:
        with pytest.raises(DestinationDown, match=f"profile {profile_name!r} in {config}"):
            chain(env)()
    else:
        got = chain(env)()
        assert (got.access_key_id, got.secret_access_key) == (key, f"secret-of-{key}")
        assert got.session_token == ("tok" if "aws_session_token" in text else None)


def test_a_role_profile_is_not_followed_and_the_message_says_so(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text(
        "[profile pbx]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = base\n"
    )
    env = nowhere(tmp_path) | {"AWS_PROFILE": "pbx"}
    with pytest.raises(DestinationDown, match=r"holds role_arn: only static keys are read"):
        chain(env)()


def test_a_changed_credentials_file_is_read_again(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    shared = tmp_path / ".aws" / "credentials"
    shared.write_text(profile("default", "FIRST"))
    get = chain(nowhere(tmp_path))
    assert get().access_key_id == "FIRST"
    shared.write_text(profile("default", "ROTATED"))
    assert get().access_key_id == "ROTATED"


def test_configured_keys_are_the_only_place(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("configured-secret\n")
    secret.chmod(0o600)
    env = {"AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "x"}
    got = credential_chain("CONFIGURED", secret, environ=env)()
    assert got == Credentials("CONFIGURED", "configured-secret")
