"""A private, real OpenSSH server for tests, and a TCP proxy that can cut connections.

`Sshd` runs Debian's `sshd` in a temp dir with its own config (`-f`, no system
`sshd_config`), an ed25519 host key, and a client key pair authorized through an
`AuthorizedKeysFile` in the temp dir, so nothing in `~/.ssh` or `/etc/ssh` is touched. It
listens on a free port on 127.0.0.1, allows public keys only, serves SFTP with
`internal-sftp`, and (with `sftp_only=True`) forces `internal-sftp` for every session, like
a locked-down webserver account. `stop()` kills the server and every session it forked;
`restart()` comes back on the same port with the same host key.

As root, sshd can log a test in as another account: `ensure_test_user()` creates the
system user `recsync-test` (left in place; creating it again is a no-op), and
`Sshd(user="recsync-test")` serves it. File modes then mean something: root ignores them.

`TcpProxy` forwards a free port on 127.0.0.1 to a target port, counts the bytes, and
`cut()`s every connection with a reset on both sides, at once or (`cut_after(n)`) after `n`
more client-to-server bytes, e.g. in the middle of an SFTP upload.

The pytest fixtures (registered through `pytest_plugins` in tests/conftest.py):

- `sshd`: one server per session, logging in the current user (root in CI).
- `sftp_only_sshd`: the same with `ForceCommand internal-sftp`.
- `unprivileged_sshd`: logging in `recsync-test`; skipped unless running as root.
- `sftp_root`: a fresh empty folder under `sshd.root` for the test, owned by its user.
- `tcp_proxy`: a factory of `TcpProxy`s, all closed after the test.

Without `sshd`/`ssh-keygen` the fixtures skip, except in CI (`CI=true`), where that is a
failure.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from tests.support.servers import PortTaken, PrivateServer, free_port, require

if TYPE_CHECKING:
    from agent.transport.sftp import SftpTransport

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
TEST_USER = "recsync-test"
PRIVSEP_DIR = Path("/run/sshd")
_POLL_INTERVAL = 0.01
# Where Debian puts the server; /usr/sbin is not on a normal user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")
_INSTALL_HINT = "run scripts/test as root to install openssh-server"

_T = TypeVar("_T")


class SshdError(RuntimeError):
    """The test server could not be set up, started or stopped."""


class _PortTaken(SshdError, PortTaken):
    """sshd could not bind its port."""


def find_program(name: str) -> str | None:
    """`name` on PATH or in the sbin directories Debian installs servers into (absolute)."""
    extra = os.pathsep.join(_EXTRA_BIN_DIRS)
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)
    return os.path.abspath(found) if found else None


def missing_programs() -> list[str]:
    """The OpenSSH programs this module needs that are not installed."""
    return [name for name in ("sshd", "ssh-keygen") if find_program(name) is None]


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    """The last `lines` lines of `path` from byte `offset` on, for error messages."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            text = file.read().decode("utf-8", errors="replace")
    except OSError as error:
        return f"({path}: {error})"
    return "\n".join(text.splitlines()[-lines:])


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _levels(pid: int) -> list[dict[int, int]]:
    """The processes below `pid`, as {pid: parent}: its children, their children, ..."""
    children = _children_map()
    levels: list[dict[int, int]] = []
    level = dict.fromkeys(children.get(pid, []), pid)
    while level:
        levels.append(level)
        level = {child: parent for parent in level for child in children.get(parent, [])}
    return levels


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    return [child for level in _levels(pid) for child in level]


def _settled(pid: int, parent: int) -> bool:
    """Whether killed `pid` is through: reaped, or a zombie no longer `parent`'s to reap."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X") and int(fields[1]) != parent


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, T, Z ...), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def is_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def ensure_test_user(name: str = TEST_USER) -> tuple[int, int]:
    """Create the system user `name` if missing (as root only; skip the test otherwise).

    Returns its uid and gid. The account gets `/bin/sh` and the password field `*` (no
    password, yet not "locked": sshd without PAM refuses accounts whose field starts
    with `!`, useradd's default), and stays on the machine afterwards.
    """
    if os.geteuid() != 0:
        pytest.skip(f"creating and logging in as the test user {name!r} needs root")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = find_program("useradd") or "useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/bin/sh", "-p", "*", name],
            check=True,
            capture_output=True,
            timeout=30,
        )
        entry = pwd.getpwnam(name)
    if _password_field(name).startswith("!"):
        usermod = find_program("usermod") or "usermod"
        subprocess.run([usermod, "-p", "*", name], check=True, capture_output=True, timeout=30)
    return entry.pw_uid, entry.pw_gid


def _password_field(name: str) -> str:
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 1:
                return fields[1]
    except OSError:
        pass
    return ""


def _world_traversable(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents))


class Sshd(PrivateServer):
    """A private OpenSSH sshd on 127.0.0.1 for tests; see the module docstring."""

    host = "127.0.0.1"

    def __init__(
        self, base_dir: Path | None = None, *, sftp_only: bool = False, user: str | None = None
    ) -> None:
        missing = missing_programs()
        if missing:
            raise SshdError(f"not installed: {', '.join(missing)} (Debian openssh-server)")
        self.user = user or _current_user()
        entry = pwd.getpwnam(self.user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self._other_user = self.uid != os.geteuid()
        if self._other_user and os.geteuid() != 0:
            raise SshdError(f"only root can serve another user ({self.user!r})")
        self.sftp_only = sftp_only
        self._own_dir = base_dir is None
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="recsync-sshd-"))
            if self._other_user and not _world_traversable(base_dir.parent):
                base_dir.rmdir()
                base_dir = Path(tempfile.mkdtemp(prefix="recsync-sshd-", dir="/tmp"))
        self.base_dir = base_dir
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._other_user:
            # sshd reads the AuthorizedKeysFile with the user's rights.
            self.base_dir.chmod(0o755)
        self.config_path = self.base_dir / "sshd_config"
        self.log_path = self.base_dir / "sshd.log"
        self.pid_file = self.base_dir / "sshd.pid"
        self.host_key = self.base_dir / "host_key"
        self.client_key = self.base_dir / "client_key"
        self.authorized_keys = self.base_dir / "authorized_keys"
        self.known_hosts = self.base_dir / "known_hosts"
        self.root = self.base_dir / "root"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        # Seconds the last start() took.
        self.start_seconds: float | None = None
        self._prepare()

    # -- set-up ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        keygen = str(find_program("ssh-keygen"))
        for key, comment in ((self.host_key, "recsync-test-host"), (self.client_key, "client")):
            if not key.exists():
                subprocess.run(
                    [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                    check=True,
                    capture_output=True,
                    stdin=subprocess.DEVNULL,
                    timeout=30,
                )
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        self.authorized_keys.chmod(0o644)
        self.root.mkdir(exist_ok=True)
        self._own(self.root)
        self.write_known_hosts(self.known_hosts)

    def _own(self, path: Path) -> None:
        """Hand `path` to the login user (a no-op when that is us)."""
        if self._other_user:
            os.chown(path, self.uid, self.gid)

    def _write_config(self) -> None:
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "Subsystem sftp internal-sftp",
            f"AllowUsers {self.user}",
            "LogLevel ERROR",
            "MaxStartups 100",
            "MaxSessions 100",
        ]
        if self.sftp_only:
            lines.append("ForceCommand internal-sftp")
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- what clients need -----------------------------------------------------------------

    def host_key_line(self, port: int | None = None) -> str:
        """The known_hosts line for this server (at `port`, e.g. a proxy's, if given)."""
        key_type, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.host}]:{port or self.port} {key_type} {key}"

    def write_known_hosts(self, path: Path, port: int | None = None) -> Path:
        path.write_text(self.host_key_line(port) + "\n")
        return path

    def client_options(self, known_hosts: Path | None = None) -> dict[str, Any]:
        """Keyword arguments for `asyncssh.connect()`: this server, user, key, host key;
        no ~/.ssh/config and no agent."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "client_keys": [str(self.client_key)],
            "known_hosts": str(known_hosts or self.known_hosts),
            "config": None,
            "agent_path": None,
        }

    def sftp_command(self, batch: Path) -> list[str]:
        """OpenSSH's `sftp -b batch` against this server with the client key (a baseline
        for the benchmarks)."""
        return [
            "sftp", "-q", "-b", str(batch), "-i", str(self.client_key), "-P", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", f"{self.user}@{self.host}",
        ]  # fmt: skip

    def destination(self, root: Path, **extra: Any) -> dict[str, Any]:
        """A `[destination]` table for the recsync config pointing at `root` here."""
        return {
            "type": "sftp",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "root": str(root),
            **extra,
        }

    def transport(self, root: Path, **options: Any) -> SftpTransport:
        """An SftpTransport on `root` here, which the caller closes; `options` override
        (`client="asyncssh"`: asyncssh pushes the bytes too)."""
        from agent.transport.sftp import SftpTransport

        settings: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "root": str(root),
            "known_hosts": self.known_hosts,
            "key_file": self.client_key,
            "timeout": 10,
            "client": "openssh",  # what open_transport picks for a key login ("auto")
            **options,
        }
        return SftpTransport(**settings)

    def new_dir(self, name: str) -> Path:
        """A fresh, empty folder `root/name` (mode 0755), owned by the login user."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dir"
        path = self.root / safe
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(mode=0o755)
        path.chmod(0o755)
        self._own(path)
        return path

    # -- life cycle ------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.is_running and self._process else None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start sshd (`-D -e -f config`) and wait until it sends its SSH banner."""
        if self.is_running:
            return
        began = time.monotonic()
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            PRIVSEP_DIR.chmod(0o755)
        self._stop_at_exit()
        self._write_config()
        self._spawn_until_ready(timeout)
        self.start_seconds = time.monotonic() - began

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Kill the server and every session process it forked; wait until all are gone."""
        process = self._process
        if process is None:
            return
        levels = []
        if process.poll() is None:
            # The listener stopped, then listed, then killed: no session forks after the
            # tree is listed (a client reconnecting the moment its session dies would
            # otherwise keep a session of a server that is "down").
            os.kill(process.pid, signal.SIGSTOP)
            while _state(process.pid) not in ("T", "t", "Z", "X", None):
                time.sleep(_POLL_INTERVAL)
            levels = _levels(process.pid)
            process.kill()
            process.wait()
        sessions = [pid for level in levels for pid in level]
        # Deepest first, each level reaped by its (still living) parent before the next.
        for level in reversed(levels):
            for pid in level:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            reaped_by = time.monotonic() + 1.0
            while time.monotonic() < reaped_by and not all(
                _settled(pid, parent) for pid, parent in level.items()
            ):
                time.sleep(_POLL_INTERVAL)
        self._process = None
        deadline = time.monotonic() + timeout
        while any(is_alive(pid) for pid in sessions):
            if time.monotonic() >= deadline:
                raise SshdError(f"sshd session processes still running: {sessions}")
            time.sleep(_POLL_INTERVAL)

    def _move_to(self, port: int) -> None:
        self.port = port
        self._write_config()
        self.write_known_hosts(self.known_hosts)

    def _spawn(self) -> None:
        command = [
            str(find_program("sshd")),  # absolute: sshd re-executes itself
            "-D",
            "-e",
            "-f",
            str(self.config_path),
            "-E",
            str(self.log_path),
        ]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            process = self._process
            assert process is not None
            if process.poll() is not None:
                self._process = None
                log_tail = _tail(self.log_path, self._log_offset)
                taken = "Address already in use" in log_tail or "Cannot bind any" in log_tail
                raise (_PortTaken if taken else SshdError)(
                    f"sshd exited with code {process.returncode} while starting "
                    f"(port {self.port}):\n{log_tail}"
                )
            try:
                if self._banner(max(0.1, deadline - time.monotonic())).startswith(b"SSH-"):
                    return
            except OSError as error:
                last_error = error
            if time.monotonic() >= deadline:
                self.stop()
                raise SshdError(
                    f"sshd did not answer within {timeout:.0f} s (last error: {last_error}):\n"
                    + _tail(self.log_path, self._log_offset)
                )
            time.sleep(_POLL_INTERVAL)

    def _banner(self, timeout: float) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=min(timeout, 2.0)) as sock:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
            return data


# -- a TCP proxy that can cut connections -------------------------------------------------

_CHUNK = 64 * 1024
_MAX_BUFFER = 256 * 1024
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def _reset_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


class _Link:
    """One proxied connection: the client's socket, ours to the target, and buffers."""

    def __init__(self, client: socket.socket, server: socket.socket, budget: int | None):
        self.client = client
        self.server = server
        self.up = bytearray()  # read from the client, not yet sent to the server
        self.down = bytearray()
        self.client_eof = False
        self.server_eof = False
        self.server_shut = False
        self.client_shut = False
        # Client bytes that may still be read before the armed cut (None: not armed).
        self.budget = budget

    def done(self) -> bool:
        return self.client_eof and self.server_eof and not self.up and not self.down


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`, one thread, no asyncio.

    `cut()` resets every current connection on both sides; `cut_after(n)` arms a cut once
    `n` more client-to-server bytes have passed on any connection (exactly `n` are
    forwarded); `pause()` stops forwarding (connections stay open) until `resume()`.
    `bytes_forwarded` counts client-to-server bytes, `bytes_returned` the other way,
    over all connections.
    """

    host = "127.0.0.1"

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.bytes_forwarded = 0
        self.bytes_returned = 0
        self.connections = 0  # accepted so far
        self.cuts = 0  # connections cut so far
        self.cut_event = threading.Event()  # set by every cut that closed a connection
        self._links: list[_Link] = []
        self._paused = False
        self._armed: int | None = None
        self._closed = False
        self._stopping = False
        self._calls: queue.Queue[tuple[Callable[[], Any], list[Any], threading.Event]] = (
            queue.Queue()
        )
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._interest: dict[socket.socket, int] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"TcpProxy:{self.port}->{target_port}", daemon=True
        )
        self._thread.start()

    # -- controls (any thread) -------------------------------------------------------------

    @property
    def active(self) -> int:
        """Connections open now."""
        return self._call(lambda: len(self._links))

    def cut(self) -> int:
        """Reset every current connection (both sides); returns how many were cut."""
        return self._call(self._cut_all)

    def cut_after(self, n_bytes: int) -> None:
        """Cut everything once `n_bytes` more client-to-server bytes passed on a connection
        (counted per connection, from now for open ones, from their start for new ones)."""

        def arm() -> None:
            self._armed = n_bytes
            for link in self._links:
                link.budget = n_bytes

        self._call(arm)

    def pause(self) -> None:
        """Stop moving bytes (connections stay open, new ones are accepted)."""
        self._call(lambda: setattr(self, "_paused", True))

    def resume(self) -> None:
        self._call(lambda: setattr(self, "_paused", False))

    def wait_cut(self, timeout: float = 10.0) -> bool:
        """Wait for a cut (e.g. the one `cut_after` armed); whether one happened."""
        return self.cut_event.wait(timeout)

    def close(self) -> None:
        """Reset all connections, stop listening, end the thread."""
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown)
        self._thread.join(10)
        self._closed = True
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, function: Callable[[], _T]) -> _T:
        """Run `function` in the proxy thread (which owns the sockets) and wait for it."""
        if self._closed or not self._thread.is_alive():
            raise RuntimeError("TcpProxy is closed")
        done = threading.Event()
        result: list[Any] = []
        self._calls.put((function, result, done))
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError("TcpProxy thread did not answer")
        if isinstance(result[0], BaseException):
            raise result[0]
        value: _T = result[0]
        return value

    # -- the loop (proxy thread only) ------------------------------------------------------

    def _run(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        while not self._stopping:
            self._update_interest()
            for key, events in self._selector.select():
                sock = key.fileobj
                if sock is self._wake_r:
                    self._run_calls()
                elif sock is self._listener:
                    self._accept()
                else:
                    assert isinstance(key.data, _Link)
                    self._serve(key.data, sock, events)  # type: ignore[arg-type]
            self._after_io()
        self._run_calls()  # answer whoever called after the shutdown

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                function, result, done = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                result.append(function())
            except BaseException as error:
                result.append(error)
            done.set()

    def _shutdown(self) -> None:
        self._cut_all(count=False)
        self._stopping = True

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset_close(client)
            return
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._links.append(_Link(client, server, self._armed))
        self.connections += 1

    def _serve(self, link: _Link, sock: socket.socket, events: int) -> None:
        if link not in self._links:
            return  # closed earlier in this round
        try:
            if sock is link.client:
                if events & selectors.EVENT_READ:
                    size = _CHUNK if link.budget is None else min(_CHUNK, link.budget)
                    data = link.client.recv(size)
                    if data:
                        link.up += data
                        if link.budget is not None:
                            link.budget -= len(data)
                    else:
                        link.client_eof = True
                if events & selectors.EVENT_WRITE and link.down:
                    sent = link.client.send(link.down)
                    del link.down[:sent]
                    self.bytes_returned += sent
            else:
                if events & selectors.EVENT_READ:
                    data = link.server.recv(_CHUNK)
                    if data:
                        link.down += data
                    else:
                        link.server_eof = True
                if events & selectors.EVENT_WRITE and link.up:
                    sent = link.server.send(link.up)
                    del link.up[:sent]
                    self.bytes_forwarded += sent
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(link)

    def _after_io(self) -> None:
        if any(link.budget == 0 and not link.up for link in self._links):
            self._armed = None
            self._cut_all()
            return
        for link in list(self._links):
            try:
                if link.client_eof and not link.up and not link.server_shut:
                    link.server.shutdown(socket.SHUT_WR)
                    link.server_shut = True
                if link.server_eof and not link.down and not link.client_shut:
                    link.client.shutdown(socket.SHUT_WR)
                    link.client_shut = True
            except OSError:
                self._drop(link)
                continue
            if link.done():
                self._drop(link, reset=False)

    def _cut_all(self, count: bool = True) -> int:
        cut = len(self._links)
        if count:
            self.cuts += cut  # before the resets, which a client may see at once
        for link in list(self._links):
            self._drop(link)
        if count and cut:
            self.cut_event.set()
        return cut

    def _drop(self, link: _Link, reset: bool = True) -> None:
        if link not in self._links:
            return
        self._links.remove(link)
        for sock in (link.client, link.server):
            if sock in self._interest:
                self._selector.unregister(sock)
                del self._interest[sock]
            if reset:
                _reset_close(sock)
            else:
                sock.close()

    def _update_interest(self) -> None:
        for link in self._links:
            client = server = 0
            if not self._paused:
                can_read_client = link.budget is None or link.budget > 0
                if not link.client_eof and len(link.up) < _MAX_BUFFER and can_read_client:
                    client |= selectors.EVENT_READ
                if link.down:
                    client |= selectors.EVENT_WRITE
                if not link.server_eof and len(link.down) < _MAX_BUFFER:
                    server |= selectors.EVENT_READ
                if link.up:
                    server |= selectors.EVENT_WRITE
            self._watch(link.client, client, link)
            self._watch(link.server, server, link)

    def _watch(self, sock: socket.socket, events: int, link: _Link) -> None:
        current = self._interest.get(sock, 0)
        if events == current:
            return
        if not events:
            self._selector.unregister(sock)
            del self._interest[sock]
        elif not current:
            self._selector.register(sock, events, link)
            self._interest[sock] = events
        else:
            self._selector.modify(sock, events, link)
            self._interest[sock] = events


# -- pytest fixtures ----------------------------------------------------------------------


def _require_sshd() -> None:
    require(missing_programs(), "OpenSSH", _INSTALL_HINT)


def _session_server(**options: Any) -> Iterator[Sshd]:
    server = Sshd(**options)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    """The session's sshd, logging in the current user (root in CI)."""
    _require_sshd()
    yield from _session_server()


@pytest.fixture(scope="session")
def sftp_only_sshd() -> Iterator[Sshd]:
    """The session's SFTP-only sshd (`ForceCommand internal-sftp`), current user."""
    _require_sshd()
    yield from _session_server(sftp_only=True)


@pytest.fixture(scope="session")
def unprivileged_sshd() -> Iterator[Sshd]:
    """The session's sshd logging in the unprivileged `recsync-test` (root only)."""
    _require_sshd()
    ensure_test_user(TEST_USER)
    yield from _session_server(user=TEST_USER)


@pytest.fixture
def sftp_root(sshd: Sshd, request: pytest.FixtureRequest) -> Path:
    """A fresh empty folder under `sshd.root` for this test; the server is running."""
    sshd.start()  # a test may have stopped it
    return sshd.new_dir(request.node.name)


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[..., TcpProxy]]:
    """`tcp_proxy(target_port, target_host="127.0.0.1")` -> a TcpProxy, closed after the test."""
    made: list[TcpProxy] = []

    def build(target_port: int, target_host: str = "127.0.0.1") -> TcpProxy:
        proxy = TcpProxy(target_port, target_host)
        made.append(proxy)
        return proxy

    yield build
    for proxy in made:
        proxy.close()
