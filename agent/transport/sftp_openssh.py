"""OpenSSH's own `sftp` client as the byte pusher under SftpTransport.

asyncssh frames, encrypts and acknowledges every 32 KiB packet in Python, under the
agent's one GIL: about 2 ms of CPU per 100 KB file here, against OpenSSH's 0.6 ms. So a
recording's bytes go through long-lived `sftp -b -` processes instead (one SSH connection
each), fed one file's commands at a time with a marker after them, so every file's
outcome is read back before the next is sent. The asyncssh session stays for everything
that is not bulk data: the probe, folders, sha256 over the shell, disk-space questions,
pages and manifests, sweeps.

The commands are built from our own paths only (the staged file, a temporary name of hex
digits, the remote name that shipnames made safe), quoted for sftp's own parser and sent
on a pipe: no shell ever sees them. Host keys stay pinned (StrictHostKeyChecking=yes
with our known_hosts file, no ~/.ssh/config, no agent).
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

ECHO = "sftp> "  # sftp -b echoes each command it reads, prefixed so
MARKER = "version"  # local, instant, answers one line: the end of an exchange
MARKER_ANSWER = "SFTP protocol version"
# Not -q, which would silence ssh's reasons for a refused login too; so sftp says this:
CHATTER = ("Uploading ",)
CLOSE_SECONDS = 10  # how long close() waits for interrupted uploads to clean up
POLL_SECONDS = 0.2  # how often a long put asks `should_stop`
BLOCK = 255 * 1024  # one write request, as the asyncssh path
REQUESTS = 16  # write requests in flight per file (sftp's own default is 64)
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"


class ClientGone(Exception):
    """the sftp process ended (connection lost, login refused) or was stopped"""

    def __init__(self, output: list[str], *, connected: bool) -> None:
        super().__init__(" / ".join(output[-3:]) or "the sftp process ended")
        self.output = output
        self.connected = connected  # False: it never answered (login, key, host key)


def available() -> bool:
    return shutil.which("sftp") is not None


def quote(path: str) -> str:
    """One argument for sftp's command parser: double-quoted, `\\` and `"` escaped. Control
    characters cannot be quoted (a newline would end the command): ValueError."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise ValueError(f"cannot pass {path!r} to sftp")
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, kw_only=True)
class Options:
    """How to start one client: the same server, account and pinned keys as asyncssh's."""

    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    timeout: float
    bwlimit_kbps: int = 0  # this process's share

    def argv(self) -> list[str]:
        keepalive = max(1, int(self.timeout / 3))
        argv = [
            "sftp", "-b", "-", "-F", "/dev/null", "-P", str(self.port),
            "-B", str(BLOCK), "-R", str(REQUESTS),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", f"IdentityFile={self.key_file}",
            "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no",
            "-o", f"ConnectTimeout={max(1, int(self.timeout))}",
            "-o", f"ServerAliveInterval={keepalive}",  # a hung server ends the process
            "-o", "ServerAliveCountMax=3",
            "-o", "Compression=no",
            "-o", f"Ciphers={CIPHERS}",
            "-o", f"User={self.user}",
        ]  # fmt: skip
        if self.bwlimit_kbps:
            argv += ["-l", str(max(1, self.bwlimit_kbps))]
        host = f"[{self.host}]" if ":" in self.host else self.host
        # A client killed with the agent (SIGKILL included) must not keep writing: the
        # signal comes when the thread that started it ends (see Spawner).
        death = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        return [*death, *argv, host]


class Spawner:
    """Starts the clients from one thread that lives as long as they may: Linux sends
    the parent-death signal when the *thread* that forked a child ends, and the upload
    threads that ask for a client may be short-lived."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[list[str], dict[str, str], Future[Popen[bytes]]] | None]
        self._requests = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, argv: list[str], env: dict[str, str]) -> Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="sftp-spawner", daemon=True
                )
                self._thread.start()
        future: Future[Popen[bytes]] = Future()
        self._requests.put((argv, env, future))
        return future.result()

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            argv, env, future = request
            try:
                future.set_result(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,  # one pipe: errors in order with the echoes
                        env=env,
                    )
                )
            except BaseException as exc:  # handed to the thread that asked
                future.set_exception(exc)

    def close(self) -> None:
        """After every client it started has ended."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._requests.put(None)
            thread.join()


class Client:
    """One `sftp -b -` process. `exchange` sends commands (each prefixed `-` so that a
    failure does not end the batch) and returns what each printed: error lines, or the
    answer of an `ls`."""

    def __init__(self, options: Options, spawner: Spawner) -> None:
        self.options = options
        self.spawner = spawner
        self._process: Popen[bytes] | None = None
        self._pending = b""
        self._killed = False  # by kill(): the transport is closing
        self._answered = False  # this process has answered once: it logged in

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self.alive else None

    def warm(self) -> None:
        """Start the process (its login runs meanwhile) unless it runs already."""
        if not self.alive:
            self._start()

    def _start(self) -> Popen[bytes]:
        self.close()  # one that ended meanwhile (a warmed one the server let go): its pipes
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        if "HOME" in os.environ:
            env["HOME"] = os.environ["HOME"]
        self._pending = b""
        self._killed = False
        self._answered = False
        self._process = self.spawner.start(self.options.argv(), env)
        return self._process

    def exchange(self, commands: list[str], should_stop: Callable[[], bool]) -> list[list[str]]:
        """Each command's output lines, in order. ClientGone when the process ended (the
        next exchange starts a new one); InterruptedError when `should_stop` said so."""
        process = self._process if self._process is not None and self.alive else self._start()
        assert process.stdin is not None and process.stdout is not None
        script = "".join(f"-{command}\n" for command in commands) + MARKER + "\n"
        try:
            process.stdin.write(script.encode())
            process.stdin.flush()
        except OSError:
            raise ClientGone(self._drain(process), connected=self._answered) from None
        lines = self._read_until_marker(process, should_stop)
        outputs: list[list[str]] = []
        for line in lines:
            if line.startswith(ECHO):
                outputs.append([])
            elif outputs and not line.startswith(CHATTER):
                outputs[-1].append(line)
        return outputs[: len(commands)]

    def _read_until_marker(
        self, process: Popen[bytes], should_stop: Callable[[], bool]
    ) -> list[str]:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        lines: list[str] = []
        readable = select.poll()  # no file descriptor of its own, unlike epoll
        readable.register(fd, select.POLLIN)
        while True:
            if should_stop():
                self.close()
                raise InterruptedError("stopped while sending")
            if not readable.poll(POLL_SECONDS * 1000):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.close()
                if self._killed:
                    raise InterruptedError("the transport was closed while sending")
                raise ClientGone(lines, connected=self._answered)
            *complete, self._pending = (self._pending + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace").rstrip("\r")  # ssh's own: CRLF
                if line.startswith(MARKER_ANSWER) and lines and lines[-1] == ECHO + MARKER:
                    self._answered = True
                    return lines[:-1]
                lines.append(line)

    def _drain(self, process: Popen[bytes]) -> list[str]:
        self.close()
        assert process.stdout is not None
        with suppress(OSError, ValueError):
            return [
                line.rstrip("\r")
                for line in process.stdout.read().decode("utf-8", "replace").splitlines()
            ]
        return []

    def kill(self) -> None:
        """From another thread: the owner's exchange then ends in ClientGone."""
        self._killed = True
        process = self._process
        if process is not None:
            with suppress(OSError):
                process.kill()

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with suppress(OSError):
            process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            with suppress(OSError):
                if pipe is not None:
                    pipe.close()


class Clients:
    """Up to `size` clients shared by the upload threads, started on first use."""

    def __init__(self, options: Options, size: int) -> None:
        self._spawner = Spawner()
        self._idle = [Client(options, self._spawner) for _ in range(size)]
        self._busy: set[Client] = set()
        self._free = threading.Condition()
        self.closed = False

    @contextmanager
    def client(self) -> Iterator[Client]:
        with self._free:
            self._free.wait_for(lambda: self._idle or self.closed)
            if self.closed:
                raise InterruptedError("the transport was closed")
            client = self._idle.pop()
            self._busy.add(client)
        try:
            yield client
        finally:
            with self._free:
                self._busy.discard(client)
                if self.closed:
                    client.close()
                else:
                    self._idle.append(client)
                self._free.notify_all()

    def warm(self) -> None:
        """Start the idle clients now: the first uploads need not wait for their logins."""
        with self._free:  # no upload thread takes one meanwhile
            if not self.closed:
                for client in self._idle:
                    client.warm()

    def pids(self) -> set[int]:
        """The processes of the idle clients that run."""
        with self._free:
            return {c.pid for c in self._idle if c.pid is not None}

    def close(self) -> None:
        """Ends every process, the busy ones too: their exchanges end in ClientGone."""
        with self._free:
            self.closed = True
            idle, busy = list(self._idle), list(self._busy)
            self._free.notify_all()
        for client in idle:
            client.close()
        for client in busy:  # their owners close them, once they removed their temporary
            client.kill()
        with self._free:
            self._free.wait_for(lambda: not self._busy, timeout=CLOSE_SECONDS)
        self._spawner.close()


def ls_listing(lines: list[str]) -> tuple[int, int] | None:
    """(mode bits, size) from an `ls -ln` line of one regular file: `-rw-r--r-- ? 1000
    1000 123456 Dec  3 14:28 name` (the name may hold spaces: it is not read)."""
    for line in lines:
        fields = line.split()
        regular = len(fields) >= 5 and len(fields[0]) == 10 and fields[0][0] == "-"
        if regular and fields[4].isdigit():
            bits = fields[0][1:]
            mode = sum(1 << (8 - n) for n, flag in enumerate(bits) if flag not in "-ST")
            return mode, int(fields[4])
    return None
