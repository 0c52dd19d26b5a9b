"""One contract for every Transport: the local folder, SFTP to a real OpenSSH sshd and S3 to
a real Ceph RADOS Gateway, each bare and wrapped in RetryingTransport (what open_transport
hands the agent). A new transport joins the `target` fixture and must pass all of it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.errors import DestinationDown, Interrupted, PermanentError, TransientError
from agent.transport import Features, RemoteFile, Transport
from agent.transport.local import LocalTransport
from agent.transport.retry import RetryingTransport
from agent.transport.scoped import SiteTransport
from tests.support.s3 import RadosGateway
from tests.support.sshd import Sshd

TEMPORARY = ".recsync-0123456789abcdef.tmp"


class Target:
    """A transport, where its root lives (a folder on disk), and how to make another
    transport of the same kind on a root that does not exist."""

    def __init__(
        self, transport: Transport, folder: Path, make: Callable[[Path], Transport]
    ) -> None:
        self.transport = transport
        self.folder = folder
        self.make = make

    def files(self) -> list[str]:
        """Every file under the root, dot-named temporaries included."""
        return sorted(
            p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file()
        )

    def read(self, remote: str) -> bytes:
        return (self.folder / remote).read_bytes()

    def plant(self, remote: str, data: bytes) -> None:
        """A file put there behind the transport's back (a crash's leftover, the webserver's)."""
        path = self.folder / remote
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def missing(self) -> Transport:
        return self.make(self.folder / "missing")

    def missing_was_made(self) -> bool:
        return (self.folder / "missing").exists()


class BucketTarget(Target):
    """The same for object storage: the root is a bucket (and a prefix) on the test RGW."""

    def __init__(self, rgw: RadosGateway, bucket: str, wrap: Callable[[Transport], Transport]):
        self.rgw = rgw
        self.bucket = bucket
        self.client = rgw.client(bucket)
        self.prefix = "archive/"
        self.wrap = wrap
        self.transport = wrap(rgw.transport(bucket, self.prefix, connections=4))

    def files(self) -> list[str]:
        keys = [key for key, _ in self.client.list_keys(self.prefix)]
        assert all(key.startswith(self.prefix) for key in keys)
        return sorted(key[len(self.prefix) :] for key in keys)

    def read(self, remote: str) -> bytes:
        answer = self.client.request("GET", self.prefix + remote)
        assert answer.status == 200, answer
        return answer.body

    def plant(self, remote: str, data: bytes) -> None:
        assert self.client.request("PUT", self.prefix + remote, body=data).status == 200

    def missing(self) -> Transport:
        return self.wrap(self.rgw.transport(f"{self.bucket}-missing", self.prefix))

    def missing_was_made(self) -> bool:
        client = self.rgw.client(f"{self.bucket}-missing")
        try:
            return client.request("HEAD", "").status != 404
        finally:
            client.close()


class SiteTarget(Target):
    """One site's folder of a shared root (destination.layout = "sites"): the files the
    suite sees are the site folder's, and nothing may appear beside it."""

    def __init__(self, root: Path, make: Callable[[Path], Transport]) -> None:
        super().__init__(make(root), root / SITE, make)
        self.root = root

    def missing(self) -> Transport:
        return self.make(self.root / "missing")

    def missing_was_made(self) -> bool:
        return (self.root / "missing").exists()


SITE = "north"
KINDS = [
    "local",
    "sftp",
    "sftp-asyncssh",  # asyncssh pushing the recordings' bytes too, not OpenSSH's sftp
    "s3",
    "local+retry",
    "sftp+retry",
    "s3+retry",
    "local+site",
    "sftp+site",
]


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    kind, _, wrapped = request.param.partition("+")
    made: list[Transport] = []

    def wrap(transport: Transport) -> Transport:
        if wrapped:
            transport = RetryingTransport(transport, max_elapsed=1.0)  # one quick retry
        if wrapped == "site":
            transport = SiteTransport(transport, site=SITE)
        made.append(transport)
        return transport

    if kind == "s3":
        rgw: RadosGateway = request.getfixturevalue("rgw")
        bucket = request.getfixturevalue("s3_bucket")
        bucket_target = BucketTarget(rgw, bucket, wrap)
        yield bucket_target
        bucket_target.client.close()
        for transport in made:
            transport.close()
        return
    if kind == "local":
        folder = tmp_path / "dest"
        folder.mkdir()

        def make(root: Path) -> Transport:
            return LocalTransport(root=root)
    else:
        sshd: Sshd = request.getfixturevalue("sshd")
        folder = request.getfixturevalue("sftp_root")

        client = "asyncssh" if kind == "sftp-asyncssh" else "openssh"

        def make(root: Path) -> Transport:
            return sshd.transport(root, connections=4, verify="sha256", client=client)

    if wrapped == "site":
        yield SiteTarget(folder, lambda root: wrap(make(root)))
        assert sorted(p.name for p in folder.iterdir()) in ([], [SITE]), "wrote outside its site"
    else:
        yield Target(wrap(make(folder)), folder, lambda root: wrap(make(root)))
    for transport in made:
        transport.close()


def local_file(tmp_path: Path, data: bytes, name: str = "x.wav") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 1_024_000])  # empty, tiny, several write requests
def test_put_lands_whole_under_its_folders(target: Target, tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path, sha = local_file(tmp_path, data)
    target.transport.put(path, "2024/03/15/a.wav", sha256=sha)
    assert target.files() == ["2024/03/15/a.wav"]
    assert target.read("2024/03/15/a.wav") == data


def test_put_again_replaces_without_a_second_file(target: Target, tmp_path: Path) -> None:
    first, sha1 = local_file(tmp_path, b"first version")
    second, sha2 = local_file(tmp_path, b"second, longer version", "y.wav")
    target.transport.put(first, "2024/03/15/a.wav", sha256=sha1)
    target.transport.put(second, "2024/03/15/a.wav", sha256=sha2)
    assert target.files() == ["2024/03/15/a.wav"]
    assert target.read("2024/03/15/a.wav") == b"second, longer version"


def test_write_bytes_read_bytes_and_remove(target: Target) -> None:
    target.transport.write_bytes("2024/03/15/manifest.json", b'{"a": 1}\n')
    target.transport.write_bytes("2024/03/15/manifest.json", b'{"a": 2}\n')
    target.transport.write_bytes("index.html", b"<html>")
    assert target.transport.read_bytes("2024/03/15/manifest.json") == b'{"a": 2}\n'
    assert target.transport.read_bytes("status.json") is None
    assert target.files() == ["2024/03/15/manifest.json", "index.html"]
    target.transport.remove("2024/03/15/manifest.json")
    target.transport.remove("2024/03/15/manifest.json")  # idempotent
    assert target.files() == ["index.html"]


def test_listdir_names_what_is_there(target: Target) -> None:
    target.transport.write_bytes("2024/03/15/manifest.json", b"{}")
    target.transport.write_bytes("2024/03/16/manifest.json", b"{}")
    target.transport.write_bytes("index.html", b"<html>")
    assert target.transport.listdir() == ["2024", "index.html"]
    assert target.transport.listdir("2024/03") == ["15", "16"]
    assert target.transport.listdir("2024/03/15") == ["manifest.json"]
    assert target.transport.listdir("2025") == []


def test_sweep_removes_only_our_temporaries(target: Target) -> None:
    target.plant(f"2024/03/15/{TEMPORARY}", b"partial")
    target.plant("2024/03/15/.recsync-fedcba9876543210.tmp", b"partial")
    target.plant("2024/03/15/keep.wav", b"someone else's")
    target.plant("2024/03/15/.htaccess", b"the webserver's")
    assert target.transport.sweep(iter(["2024/03/15", "2024/03/16"])) == 2
    assert target.files() == ["2024/03/15/.htaccess", "2024/03/15/keep.wav"]
    assert target.transport.sweep(["2024/03/15"]) == 0


def test_sweep_of_the_root_folder(target: Target) -> None:
    """ "" is the root: a heartbeat or a root page killed mid-write leaves its temporary there."""
    target.plant(TEMPORARY, b"partial status.json")
    target.plant("status.json", b"{}")
    assert target.transport.sweep([""]) == 1
    assert target.files() == ["status.json"]


@pytest.mark.parametrize(
    "remote", ["../escape.wav", "/etc/passwd", "2024/../../x.wav", "", "2024//x.wav", "a/./b"]
)
def test_paths_outside_the_root_are_refused(target: Target, tmp_path: Path, remote: str) -> None:
    path, sha = local_file(tmp_path, b"data")
    with pytest.raises(PermanentError, match="unsafe remote path"):
        target.transport.put(path, remote, sha256=sha)
    with pytest.raises(PermanentError, match="unsafe remote path"):
        target.transport.write_bytes(remote, b"data")
    assert target.files() == []
    assert not (tmp_path / "escape.wav").exists()


def test_a_name_too_long_for_the_server_is_a_fault_of_that_file(
    target: Target, tmp_path: Path
) -> None:
    path, sha = local_file(tmp_path, b"data")
    with pytest.raises(PermanentError):
        target.transport.put(path, "2024/03/15/" + "x" * 300 + ".wav", sha256=sha)
    assert [f for f in target.files() if "/." in f] == []


def test_wrong_checksum_is_transient_and_never_lands(target: Target, tmp_path: Path) -> None:
    """A staged copy that changed after it was hashed: try again later, leave no trace."""
    path, _ = local_file(tmp_path, b"data" * 1000)
    with pytest.raises(TransientError):
        target.transport.put(path, "2024/03/15/a.wav", sha256="0" * 64)
    assert target.files() == []  # no final file, no temporary


def test_a_failed_replace_keeps_the_old_version(target: Target, tmp_path: Path) -> None:
    good, sha = local_file(tmp_path, b"shipped version")
    target.transport.put(good, "2024/03/15/a.wav", sha256=sha)
    bad, _ = local_file(tmp_path, b"another", "y.wav")
    with pytest.raises(TransientError):
        target.transport.put(bad, "2024/03/15/a.wav", sha256="0" * 64)
    assert target.files() == ["2024/03/15/a.wav"]
    assert target.read("2024/03/15/a.wav") == b"shipped version"


@pytest.mark.parametrize("after", [0, 2])  # before the first byte; partway into the file
def test_stop_mid_upload_leaves_nothing(target: Target, tmp_path: Path, after: int) -> None:
    path, sha = local_file(tmp_path, b"x" * 3_000_000)
    asked = iter(range(10_000))
    with pytest.raises(Interrupted):
        target.transport.put(
            path, "2024/03/15/a.wav", sha256=sha, should_stop=lambda: next(asked) >= after
        )
    assert target.files() == []


def test_a_missing_local_file_leaves_nothing(target: Target, tmp_path: Path) -> None:
    with pytest.raises((TransientError, PermanentError)):
        target.transport.put(tmp_path / "gone.wav", "2024/03/15/a.wav", sha256="0" * 64)
    assert target.files() == []


def test_probe_answers_and_leaves_nothing(target: Target) -> None:
    assert target.transport.probe() is None
    assert target.files() == []
    features = target.transport.features
    assert isinstance(features, Features) and features.parallel >= 1
    assert features.describe().startswith(f"{features.parallel} at once")


def test_a_missing_root_pauses_the_destination(target: Target, tmp_path: Path) -> None:
    missing = target.missing()
    with pytest.raises(DestinationDown, match="does not exist"):
        missing.probe()
    path, sha = local_file(tmp_path, b"data")
    with pytest.raises(DestinationDown, match="does not exist"):
        missing.put(path, "2024/03/15/a.wav", sha256=sha)
    with pytest.raises(DestinationDown, match="does not exist"):
        missing.write_bytes("2024/03/15/manifest.json", b"{}")
    assert not target.missing_was_made()  # never made: it may be a lost mount


def test_close_then_reuse(target: Target) -> None:
    target.transport.write_bytes("a.txt", b"1")
    target.transport.close()
    target.transport.close()
    target.transport.write_bytes("b.txt", b"2")  # starts again on demand
    assert target.files() == ["a.txt", "b.txt"]


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
    for n in range(8):
        assert target.read(f"2024/03/15/{n}.wav") == f"file {n}".encode() * 1000


def test_create_bytes_writes_only_a_new_name(target: Target) -> None:
    """The optional create (Features.create_bytes): a second create of a name is refused
    and leaves the first content; a write still replaces. SFTP has none yet."""
    create = target.transport.features.create_bytes
    if create is None:
        pytest.skip("no create_bytes: the owner check is its read alone")
    assert create("status.json", b'{"host": "first"}') is True
    assert create("status.json", b'{"host": "second"}') is False
    assert target.read("status.json") == b'{"host": "first"}'
    assert target.files() == ["status.json"]  # no temporary left by the refused one
    target.transport.write_bytes("status.json", b"{}")
    assert target.read("status.json") == b"{}"


def test_stat_remote_tells_the_size_and_sha256_of_what_is_there(
    target: Target, tmp_path: Path
) -> None:
    """What retention checks again before an original leaves the spool."""
    data = b"shipped recording" * 5000
    path, sha = local_file(tmp_path, data)
    assert target.transport.stat_remote("2024/03/15/a.wav") is None
    target.transport.put(path, "2024/03/15/a.wav", sha256=sha, metadata={"sha256": sha})
    assert target.transport.stat_remote("2024/03/15/a.wav") == RemoteFile(len(data), sha)
    assert target.transport.stat_remote("2024/03/15") is None  # a folder is no file
    assert target.files() == ["2024/03/15/a.wav"]  # nothing left by the check


def test_stat_remote_sees_a_copy_changed_behind_its_back(target: Target, tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    path, sha = local_file(tmp_path, data)
    target.transport.put(path, "2024/03/15/a.wav", sha256=sha, metadata={"sha256": sha})
    target.plant("2024/03/15/a.wav", data[:-1] + b"X")  # same size, other bytes
    altered = target.transport.stat_remote("2024/03/15/a.wav")
    assert altered is not None and altered.size == len(data) and altered.sha256 != sha
    target.plant("2024/03/15/a.wav", data[:100])
    truncated = target.transport.stat_remote("2024/03/15/a.wav")
    assert truncated is not None and truncated.size == 100
    with pytest.raises(PermanentError, match="unsafe remote path"):
        target.transport.stat_remote("../a.wav")
