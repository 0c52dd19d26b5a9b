"""OpenSSH's `sftp` as the byte pusher (destination.sftp_client): what only this path
has. tests/test_sftp.py and the transport contract suite run their cases with it too."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import load as load_config
from agent.errors import ConfigError, DestinationDown
from agent.transport import open_transport
from agent.transport.sftp import SftpTransport
from agent.transport.sftp_openssh import ls_listing, quote
from tests.support.daemon import wait_for
from tests.support.sshd import Sshd


def _staged(tmp_path: Path, size: int = 50_000) -> tuple[Path, str, bytes]:
    data = os.urandom(size)
    path = tmp_path / "1.wav"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), data


@pytest.fixture
def make() -> Iterator[Callable[..., SftpTransport]]:
    made: list[SftpTransport] = []

    def build(server: Sshd, root: Path, **options: Any) -> SftpTransport:
        made.append(server.transport(root, **options))
        return made[-1]

    yield build
    for transport in made:
        transport.close()


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("/srv/rec/a.wav", '"/srv/rec/a.wav"'),
        ("/srv/with space/a b.wav", '"/srv/with space/a b.wav"'),
        ('/srv/"quoted".wav', '"/srv/\\"quoted\\".wav"'),
        ("/srv/back\\slash.wav", '"/srv/back\\\\slash.wav"'),
        ("/srv/$(reboot);*?[x].wav", '"/srv/$(reboot);*?[x].wav"'),
        ("/srv/Zoë 東京.wav", '"/srv/Zoë 東京.wav"'),
    ],
)
def test_quote_for_sftps_parser(path: str, quoted: str) -> None:
    assert quote(path) == quoted


@pytest.mark.parametrize("bad", ["a\nrm -rf x", "a\rb", "a\x00b", "a\x1bb", "a\x7fb"])
def test_control_characters_cannot_be_quoted(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot pass"):
        quote(bad)


def test_ls_listing_reads_the_mode_and_the_size() -> None:
    line = "-rw-r-----    ? 1000     1000       123456 Dec  3 14:28 /srv/a b.wav"
    assert ls_listing([line]) == (0o640, 123456)
    assert ls_listing(["-rwsr-xr-T ? 0 0 7 Dec  3 14:28 x"]) == (0o754, 7)
    assert ls_listing(['Can\'t ls: "/srv/x" not found']) is None
    assert ls_listing(["drwxr-xr-x ? 0 0 4096 Dec  3 14:28 folder"]) is None


def test_a_server_umask_still_gives_the_exact_mode(
    sshd: Sshd, sftp_root: Path, make: Callable[..., SftpTransport], tmp_path: Path
) -> None:
    transport = make(sshd, sftp_root, client="openssh", file_mode=0o664)  # umask 022 here
    local, sha, _ = _staged(tmp_path)
    local.chmod(0o600)
    transport.put(local, "2024/03/15/a.wav", sha256=sha)
    assert (sftp_root / "2024/03/15/a.wav").stat().st_mode & 0o777 == 0o664


def test_the_probe_starts_the_clients_the_uploads_then_use(
    sshd: Sshd, sftp_root: Path, make: Callable[..., SftpTransport], tmp_path: Path
) -> None:
    transport = make(sshd, sftp_root, client="openssh", connections=2)
    transport.probe()
    bulk = transport._bulk
    assert bulk is not None
    started = bulk.clients.pids()
    assert len(started) == 2  # running before any upload asked for one
    local, sha, data = _staged(tmp_path)
    transport.put(local, "2024/03/15/a.wav", sha256=sha)
    assert (sftp_root / "2024/03/15/a.wav").read_bytes() == data
    assert bulk.clients.pids() == started  # no new login for the upload


def test_hostile_remote_names_arrive_exactly_as_named(
    sshd: Sshd, sftp_root: Path, make: Callable[..., SftpTransport], tmp_path: Path
) -> None:
    transport = make(sshd, sftp_root, client="openssh", verify="sha256")
    local, sha, data = _staged(tmp_path)
    names = ['a "quoted" name.wav', "back\\slash.wav", "$(touch pwned);*?[x].wav", "Zoë 東京.wav"]
    for name in names:
        transport.put(local, f"2024/03/15/{name}", sha256=sha)
    day = sftp_root / "2024/03/15"
    assert sorted(p.name for p in day.iterdir()) == sorted(names)
    assert all((day / name).read_bytes() == data for name in names)
    assert not list(sftp_root.rglob("pwned")) and not Path("pwned").exists()
    assert all((day / name).stat().st_mode & 0o777 == 0o644 for name in names)


def test_a_folder_removed_after_it_was_made_is_made_again(
    sshd: Sshd, sftp_root: Path, make: Callable[..., SftpTransport], tmp_path: Path
) -> None:
    transport = make(sshd, sftp_root, client="openssh")
    local, sha, data = _staged(tmp_path)
    transport.put(local, "2024/03/15/a.wav", sha256=sha)
    shutil.rmtree(sftp_root / "2024")
    transport.put(local, "2024/03/15/b.wav", sha256=sha)
    assert (sftp_root / "2024/03/15/b.wav").read_bytes() == data


def _too_open_key(sshd: Sshd, tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    shutil.copyfile(sshd.client_key, key)
    key.chmod(0o644)  # OpenSSH refuses to use it; asyncssh does not mind
    return key


def test_auto_falls_back_to_asyncssh_when_openssh_refuses_the_key(
    sshd: Sshd,
    sftp_root: Path,
    make: Callable[..., SftpTransport],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = _too_open_key(sshd, tmp_path)
    transport = make(sshd, sftp_root, client="auto", key_file=key)
    local, sha, data = _staged(tmp_path)
    with caplog.at_level(logging.WARNING):
        transport.put(local, "2024/03/15/a.wav", sha256=sha)
        transport.put(local, "2024/03/15/b.wav", sha256=sha)
    assert (sftp_root / "2024/03/15/a.wav").read_bytes() == data
    assert (sftp_root / "2024/03/15/b.wav").read_bytes() == data
    refused = [r for r in caplog.records if "sftp-openssh-refused" in r.getMessage()]
    assert len(refused) == 1 and "bad permissions" in refused[0].getMessage()


def test_openssh_asked_for_by_name_pauses_on_a_refused_key(
    sshd: Sshd, sftp_root: Path, make: Callable[..., SftpTransport], tmp_path: Path
) -> None:
    key = _too_open_key(sshd, tmp_path)
    transport = make(sshd, sftp_root, client="openssh", key_file=key)
    local, sha, _ = _staged(tmp_path)
    with pytest.raises(DestinationDown, match="refused the login"):
        transport.put(local, "2024/03/15/a.wav", sha256=sha)
    assert not (sftp_root / "2024/03/15/a.wav").exists()


def _config(tmp_path: Path, sshd: Sshd, root: Path, extra: str) -> Path:
    path = tmp_path / "recsync.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [spool]
            path = "{tmp_path / "spool"}"
            [state]
            path = "{tmp_path / "state.db"}"
            [destination]
            type = "sftp"
            root = "{root}"
            host = "{sshd.host}"
            port = {sshd.port}
            user = "{sshd.user}"
            key_file = "{sshd.client_key}"
            known_hosts = "{sshd.known_hosts}"
            """
        )
        + extra
    )
    (tmp_path / "spool").mkdir(exist_ok=True)
    return path


@pytest.mark.parametrize(
    ("extra", "client"),
    [
        ("", "openssh"),  # auto: a key login OpenSSH can do alone
        ('sftp_client = "asyncssh"\n', "asyncssh"),
        ('sftp_client = "openssh"\n', "openssh"),
    ],
)
def test_which_client_the_config_picks(
    sshd: Sshd, sftp_root: Path, tmp_path: Path, extra: str, client: str
) -> None:
    config = load_config(_config(tmp_path, sshd, sftp_root, extra))
    transport = open_transport(config.destination)
    try:
        assert getattr(transport, "inner", transport).client == client
    finally:
        transport.close()


def test_a_password_login_keeps_asyncssh_and_openssh_refuses_it(
    sshd: Sshd, sftp_root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("not used\n")
    secret.chmod(0o600)
    auto = load_config(_config(tmp_path, sshd, sftp_root, f'password_file = "{secret}"\n'))
    transport = open_transport(auto.destination)
    try:
        assert getattr(transport, "inner", transport).client == "asyncssh"
    finally:
        transport.close()
    extra = f'password_file = "{secret}"\nsftp_client = "openssh"\n'
    with pytest.raises(ConfigError, match="sftp_client = 'openssh'"):
        load_config(_config(tmp_path, sshd, sftp_root, extra))


CHILD = """
import hashlib, sys, time
from pathlib import Path
from agent.transport.sftp import SftpTransport
host, port, user, key, known, root, local = sys.argv[1:]
t = SftpTransport(host=host, port=int(port), user=user, root=root, known_hosts=Path(known),
                  key_file=Path(key), client="openssh", connections=2)
data = Path(local).read_bytes()
t.put(Path(local), "2024/03/15/a.wav", sha256=hashlib.sha256(data).hexdigest())
pids = [c._process.pid for c in t._bulk.clients._idle if c._process is not None]
print(" ".join(map(str, pids)), flush=True)
time.sleep(600)
"""


def test_the_sftp_clients_die_with_the_agent(sshd: Sshd, sftp_root: Path, tmp_path: Path) -> None:
    local, _, _ = _staged(tmp_path)
    args = [sshd.host, str(sshd.port), sshd.user, str(sshd.client_key)]
    args += [str(sshd.known_hosts), str(sftp_root), str(local)]
    agent = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert agent.stdout is not None
    pids = [int(pid) for pid in agent.stdout.readline().split()]
    assert pids and all(Path(f"/proc/{pid}").exists() for pid in pids)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    agent.stdout.close()
    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), "the sftp clients to end"
    )
