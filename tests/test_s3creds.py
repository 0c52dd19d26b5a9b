"""Where S3 credentials come from (agent/transport/s3creds.py, s3roles.py): the chain's
order, the shared files, the container and instance roles against a local stand-in for
the metadata endpoints (tests/support/metadata.py), and once against the real Ceph RGW."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import DestinationDown
from agent.transport import open_transport
from agent.transport.s3client import Credentials
from agent.transport.s3creds import credential_chain
from agent.transport.s3roles import ContainerRole, may_send_token
from tests.conftest import Site
from tests.support.metadata import CONTAINER, ROLES, Keys, MetadataServer, serve
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, RadosGateway
from tests.support.servers import free_port

T0 = datetime.now(UTC).replace(microsecond=0)  # the fake's default keys are valid from now
IMDS = [("PUT", "/latest/api/token"), ("GET", ROLES), ("GET", ROLES + "recsync-role")]


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def nowhere(tmp_path: Path) -> dict[str, str]:
    """An environment with credentials nowhere: no files, IMDS on a port nobody holds."""
    return {
        "HOME": str(tmp_path),
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{free_port()}",
    }


def chain(env: dict[str, str], clock: Clock | None = None) -> Callable[[], Credentials]:
    return credential_chain(None, None, environ=env, clock=clock or Clock())


def on_imds(metadata: MetadataServer, tmp_path: Path) -> dict[str, str]:
    return nowhere(tmp_path) | {"AWS_EC2_METADATA_SERVICE_ENDPOINT": metadata.endpoint}


def keys(name: str, *, expires: datetime = T0 + timedelta(hours=1)) -> Keys:
    return Keys(f"ASIA{name}", f"secret-of-{name}", f"token-of-{name}", expires)


# --- the instance role (IMDSv2) ---------------------------------------------------------------


def test_imds_v2_asks_a_token_then_the_role_then_its_keys(
    metadata: MetadataServer, tmp_path: Path
) -> None:
    metadata.keys = keys("ROLE")
    got = chain(on_imds(metadata, tmp_path))()
    assert got == Credentials("ASIAROLE", "secret-of-ROLE", "token-of-ROLE")
    assert metadata.requests() == IMDS
    put, *gets = metadata.seen
    assert put.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert [get.headers.get("x-aws-ec2-metadata-token") for get in gets] == ["imds-token-1"] * 2


def test_role_keys_are_kept_until_minutes_before_they_expire(
    metadata: MetadataServer, tmp_path: Path
) -> None:
    clock = Clock()
    get = chain(on_imds(metadata, tmp_path), clock)
    metadata.keys = keys("FIRST")
    assert get().access_key_id == "ASIAFIRST"
    metadata.keys = keys("SECOND", expires=T0 + timedelta(hours=2))
    clock.advance(3600 - 301)
    assert get().access_key_id == "ASIAFIRST"
    assert len(metadata.requests()) == 3  # every request so far signed with the cached keys
    clock.advance(2)  # within 5 minutes of Expiration
    assert get().access_key_id == "ASIASECOND"
    assert metadata.requests() == IMDS * 2


def test_a_failed_refresh_keeps_the_old_keys_until_they_expire(
    metadata: MetadataServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    clock = Clock()
    get = chain(on_imds(metadata, tmp_path), clock)
    metadata.keys = keys("OLD")
    get()
    metadata.fail(500, times=10)
    clock.advance(3600 - 200)
    assert get().access_key_id == "ASIAOLD"
    assert "s3-role-refresh-failed" in caplog.text
    clock.advance(30)  # the failed place is asked again only after a minute
    assert get().access_key_id == "ASIAOLD"
    assert len(metadata.requests()) == 4
    clock.advance(200)  # expired, and the service still fails
    with pytest.raises(DestinationDown, match="the IMDSv2 token: HTTP 500"):
        get()
    assert "secret-of-OLD" not in caplog.text and "token-of-OLD" not in caplog.text


def test_disabled_imds_is_not_asked(metadata: MetadataServer, tmp_path: Path) -> None:
    env = on_imds(metadata, tmp_path) | {"AWS_EC2_METADATA_DISABLED": "True"}
    with pytest.raises(DestinationDown, match="AWS_EC2_METADATA_DISABLED=true"):
        chain(env)()
    assert metadata.requests() == []


def test_no_answer_is_remembered_for_a_minute(tmp_path: Path) -> None:
    port = free_port()
    env = nowhere(tmp_path) | {"AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{port}"}
    clock = Clock()
    get = chain(env, clock)
    with pytest.raises(DestinationDown, match=r"the IMDSv2 token: no answer \(Connection refused"):
        get()
    with serve(port) as metadata:  # the service comes up
        metadata.keys = keys("LATE")
        clock.advance(30)
        with pytest.raises(DestinationDown):
            get()
        assert metadata.requests() == []
        clock.advance(31)
        assert get() == metadata.keys.credentials()


def test_a_silent_metadata_service_holds_a_request_about_a_second(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = nowhere(tmp_path)
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(DestinationDown, match="timed out"):
            credential_chain(None, None, environ=env)()  # the default timeouts
        assert time.monotonic() - started < 2.5


def test_threads_at_a_refresh_share_one_fetch(metadata: MetadataServer, tmp_path: Path) -> None:
    get = chain(on_imds(metadata, tmp_path))
    metadata.delay = 0.2  # a slow service: the threads overlap
    start = threading.Barrier(8)
    got: list[Credentials] = []

    def sign() -> None:
        start.wait()
        got.append(get())

    threads = [threading.Thread(target=sign) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert got == [metadata.keys.credentials()] * 8
    assert metadata.requests() == IMDS


def test_held_keys_are_used_while_another_thread_refreshes(
    metadata: MetadataServer, tmp_path: Path
) -> None:
    clock = Clock()
    get = chain(on_imds(metadata, tmp_path), clock)
    metadata.keys = keys("OLD")
    get()
    metadata.keys = keys("NEW", expires=T0 + timedelta(hours=2))
    metadata.delay = 0.4  # each answer; within the 1 s timeout
    clock.advance(3600 - 200)
    refresher = threading.Thread(target=get)
    refresher.start()
    try:
        while len(metadata.requests()) < 4:  # its token PUT is in
            time.sleep(0.01)
        started = time.monotonic()
        assert get().access_key_id == "ASIAOLD"
        assert time.monotonic() - started < 0.2
    finally:
        refresher.join(timeout=10)
    assert get().access_key_id == "ASIANEW"


# --- the container role (ECS, EKS pod identity) -----------------------------------------------


def on_container(metadata: MetadataServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = nowhere(tmp_path) | {"AWS_CONTAINER_CREDENTIALS_FULL_URI": metadata.endpoint + CONTAINER}
    return env | extra


def test_container_full_uri_sends_the_token_file_read_at_each_fetch(
    metadata: MetadataServer, tmp_path: Path
) -> None:
    token = tmp_path / "eks-token"
    token.write_text("pod-token-1\n")
    env = on_container(
        metadata,
        tmp_path,
        AWS_CONTAINER_AUTHORIZATION_TOKEN="env-token",  # the file wins
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token),
    )
    clock = Clock()
    get = chain(env, clock)
    metadata.keys = keys("POD")
    assert get() == Credentials("ASIAPOD", "secret-of-POD", "token-of-POD")
    token.write_text("pod-token-2\n")  # rotated by the kubelet
    clock.advance(3600 - 200)
    get()
    assert metadata.requests() == [("GET", CONTAINER)] * 2
    assert [seen.headers["authorization"] for seen in metadata.seen] == [
        "pod-token-1",
        "pod-token-2",
    ]


def test_container_token_from_the_environment(metadata: MetadataServer, tmp_path: Path) -> None:
    env = on_container(metadata, tmp_path, AWS_CONTAINER_AUTHORIZATION_TOKEN="ecs-token")
    chain(env)()
    assert metadata.seen[0].headers["authorization"] == "ecs-token"


def test_a_relative_uri_goes_to_the_ecs_agent() -> None:
    role = ContainerRole({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc"})
    assert role.url == "http://169.254.170.2/v2/credentials/abc"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://creds.example.com/x", True),
        ("http://127.0.0.1:8080/x", True),
        ("http://[::1]/x", True),
        ("http://localhost/x", True),
        ("http://169.254.170.23/v1/credentials", True),  # EKS pod identity
        ("http://creds.example.com/x", False),  # the token would cross a network in clear
        ("http://10.0.0.5/x", False),
        ("file:///etc/passwd", False),
        ("http://127.0.0.1:port/x", False),
        ("169.254.170.2/x", False),
    ],
)
def test_plain_http_only_to_local_and_ecs_eks_hosts(url: str, allowed: bool) -> None:
    assert may_send_token(url) is allowed


def test_a_refused_full_uri_is_not_asked_and_says_why(tmp_path: Path) -> None:
    env = nowhere(tmp_path) | {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://creds.example.com/x",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "ecs-token",
    }
    with pytest.raises(
        DestinationDown, match=r"role at http://creds\.example\.com: refused: https, or"
    ):
        chain(env)()


# --- the shared files, and the order of the chain ---------------------------------------------


def profile(name: str, key: str) -> str:
    return f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = secret-of-{key}\n"


def test_the_chain_takes_the_first_place_that_has_keys(
    metadata: MetadataServer, tmp_path: Path
) -> None:
    credentials, config = tmp_path / "credentials", tmp_path / "config"
    credentials.write_text(profile("pbx", "FILE"))
    config.write_text(profile("profile pbx", "CONFIG"))
    metadata.container_keys = keys("CONTAINER")
    metadata.keys = keys("INSTANCE")
    env = on_container(metadata, tmp_path) | {
        "AWS_ACCESS_KEY_ID": "ENV",
        "AWS_SECRET_ACCESS_KEY": "secret-of-ENV",
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config),
        "AWS_PROFILE": "pbx",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": metadata.endpoint,
    }
    steps: list[tuple[str, Callable[[], object]]] = [
        ("ENV", lambda: env.pop("AWS_ACCESS_KEY_ID")),
        ("FILE", credentials.unlink),
        ("CONFIG", config.unlink),
        ("ASIACONTAINER", lambda: env.pop("AWS_CONTAINER_CREDENTIALS_FULL_URI")),
        ("ASIAINSTANCE", lambda: None),
    ]
    for expected, take_away in steps:
        assert chain(env)().access_key_id == expected
        take_away()
    assert metadata.requests() == [("GET", CONTAINER), *IMDS]  # asked only when reached


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


def test_no_credentials_names_every_place_and_no_secret(
    metadata: MetadataServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    env = on_container(metadata, tmp_path, AWS_CONTAINER_AUTHORIZATION_TOKEN="container-secret")
    env |= {
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": metadata.endpoint,
        "AWS_PROFILE": "pbx",
        "AWS_ACCESS_KEY_ID": "AKIA-WITHOUT-A-SECRET",
    }
    metadata.fail(500, times=2)
    with pytest.raises(DestinationDown) as raised:
        chain(env)()
    message = str(raised.value)
    home = tmp_path / ".aws"
    for place in [
        "set destination.access_key_id and secret_access_key_file",
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment",
        f"profile 'pbx' in {home / 'credentials'}",
        f"profile 'pbx' in {home / 'config'}",
        f"the container role at {metadata.endpoint}: the credentials: HTTP 500",
        f"the EC2 instance role (IMDSv2 at {metadata.endpoint}): the IMDSv2 token: HTTP 500",
    ]:
        assert place in message
    assert "container-secret" not in message + caplog.text


def test_configured_keys_are_the_only_place(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("configured-secret\n")
    secret.chmod(0o600)
    env = {"AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "x"}
    got = credential_chain("CONFIGURED", secret, environ=env)()
    assert got == Credentials("CONFIGURED", "configured-secret")


# --- end to end: an instance role's keys on the real gateway ----------------------------------


def test_an_instance_role_ships_to_the_real_gateway(
    rgw: RadosGateway,
    s3_bucket: str,
    metadata: MetadataServer,
    monkeypatch: pytest.MonkeyPatch,
    site: Site,
) -> None:
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(site.root))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", metadata.endpoint)
    # With a session token, as roles give (signed as x-amz-security-token): RGW without
    # STS accepts the request on the user's keys.
    metadata.keys = Keys(ACCESS_KEY, SECRET_KEY, "role-session-token")
    destination = {
        "type": "s3",
        "endpoint": rgw.endpoint,
        "bucket": s3_bucket,
        "prefix": "pbx1",
        "addressing_style": "path",
    }
    transport = open_transport(site.config(destination=destination).destination)
    local, data = site.root / "call.wav", b"RIFF" + bytes(1000)
    local.write_bytes(data)
    try:
        transport.put(local, "2024/03/15/call.wav", sha256=hashlib.sha256(data).hexdigest())
        assert transport.read_bytes("2024/03/15/call.wav") == data
    finally:
        transport.close()
    assert metadata.requests() == IMDS  # once, for every request of the upload
