"""One contract for every Transport: the local folder and SFTP to a real OpenSSH sshd."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import Interrupted, PermanentError
from agent.transport import Transport
from agent.transport.local import LocalTransport
from agent.transport.sftp import SftpTransport
from tests.support.sshd import Sshd


class Target:
    """A transport and the folder on disk where its root is, to look at what arrived."""

    def __init__(self, transport: Transport, folder: Path) -> None:
        self.transport = transport
        self.folder = folder

    def files(self) -> list[str]:
        return sorted(
            p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file()
        )


@pytest.fixture(params=["local", "sftp"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "local":
        folder = tmp_path / "dest"
        folder.mkdir()
        transport: Transport = LocalTransport(root=folder)
    else:
        sshd: Sshd = request.getfixturevalue("sshd")
        folder = request.getfixturevalue("sftp_root")
        transport = SftpTransport(
            host=sshd.host,
            port=sshd.port,
            user=sshd.user,
            root=str(folder),
            known_hosts=sshd.write_known_hosts(tmp_path / "known_hosts"),
            key_file=sshd.client_key,
            connections=4,
        )
    yield Target(transport, folder)
    transport.close()


def local_file(tmp_path: Path, data: bytes, name: str = "x.wav") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_put_lands_whole_under_its_folders(target: Target, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000  # 1 MB: several write requests
    path, sha = local_file(tmp_path, data)
    target.transport.put(path, "2024/03/15/a.wav", sha256=sha)
    assert target.files() == ["2024/03/15/a.wav"]
    assert (target.folder / "2024/03/15/a.wav").read_bytes() == data


def test_put_again_replaces_without_a_second_file(target: Target, tmp_path: Path) -> None:
    first, sha1 = local_file(tmp_path, b"first version")
    second, sha2 = local_file(tmp_path, b"second, longer version", "y.wav")
    target.transport.put(first, "2024/03/15/a.wav", sha256=sha1)
    target.transport.put(second, "2024/03/15/a.wav", sha256=sha2)
    assert target.files() == ["2024/03/15/a.wav"]
    assert (target.folder / "2024/03/15/a.wav").read_bytes() == b"second, longer version"


def test_write_bytes_and_remove(target: Target) -> None:
    target.transport.write_bytes("2024/03/15/manifest.json", b'{"a": 1}\n')
    target.transport.write_bytes("2024/03/15/manifest.json", b'{"a": 2}\n')
    assert (target.folder / "2024/03/15/manifest.json").read_bytes() == b'{"a": 2}\n'
    target.transport.remove("2024/03/15/manifest.json")
    target.transport.remove("2024/03/15/manifest.json")  # idempotent
    assert target.files() == []


def test_listdir_names_what_is_there(target: Target) -> None:
    target.transport.write_bytes("2024/03/15/manifest.json", b"{}")
    target.transport.write_bytes("2024/03/16/manifest.json", b"{}")
    target.transport.write_bytes("index.html", b"<html>")
    assert target.transport.listdir() == ["2024", "index.html"]
    assert target.transport.listdir("2024/03") == ["15", "16"]
    assert target.transport.listdir("2024/03/15") == ["manifest.json"]
    assert target.transport.listdir("2025") == []


def test_sweep_removes_only_our_temporaries(target: Target) -> None:
    day = target.folder / "2024/03/15"
    day.mkdir(parents=True)
    (day / ".recsync-0123456789abcdef.tmp").write_bytes(b"partial")
    (day / "keep.wav").write_bytes(b"someone else's")
    assert target.transport.sweep(["2024/03/15", "2024/03/16"]) == 1
    assert target.files() == ["2024/03/15/keep.wav"]


@pytest.mark.parametrize("remote", ["../escape.wav", "/etc/passwd", "2024/../../x.wav", ""])
def test_paths_outside_the_root_are_refused(target: Target, tmp_path: Path, remote: str) -> None:
    path, sha = local_file(tmp_path, b"data")
    with pytest.raises(PermanentError):
        target.transport.put(path, remote, sha256=sha)


def test_wrong_checksum_never_lands(target: Target, tmp_path: Path) -> None:
    path, _ = local_file(tmp_path, b"data")
    with pytest.raises(Exception):  # noqa: B017 - the kind is the transport's to choose
        target.transport.put(path, "2024/03/15/a.wav", sha256="0" * 64)
    assert [f for f in target.files() if not f.startswith("2024/03/15/.")] == []


def test_stop_mid_upload_leaves_nothing(target: Target, tmp_path: Path) -> None:
    path, sha = local_file(tmp_path, b"x" * 3_000_000)
    with pytest.raises(Interrupted):
        target.transport.put(path, "2024/03/15/a.wav", sha256=sha, should_stop=lambda: True)
    assert target.files() == []


def test_probe_answers(target: Target) -> None:
    target.transport.probe()


def test_parallel_puts_into_one_new_folder(target: Target, tmp_path: Path) -> None:
    jobs = [local_file(tmp_path, f"file {n}".encode() * 1000, f"{n}.wav") for n in range(8)]
    errors: list[BaseException] = []

    def put(n: int) -> None:
        try:
            target.transport.put(jobs[n][0], f"2024/03/15/{n}.wav", sha256=jobs[n][1])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.files() == sorted(f"2024/03/15/{n}.wav" for n in range(8))
