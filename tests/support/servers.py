"""What the private test servers (MariaDB, sshd) share: clean-up at exit and a clear skip
or, in CI, a failure when their Debian package is missing."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Self

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (a server of the test takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require(missing: list[str], what: str, hint: str) -> None:
    """Skip (or in CI, where a missing server is a failure, fail) when programs are missing."""
    if not missing:
        return
    message = f"{what} is not installed ({', '.join(missing)} missing): {hint}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_program(name: str, package: str) -> str:
    """The path of a program from a Debian package; a skip, or in CI a failure, without."""
    path = shutil.which(name)
    if path is None:
        require([name], name, f"Debian package {package}; scripts/test installs it as root")
    assert path is not None
    return path


class PortTaken(Exception):
    """The server could not bind its port: someone took it after free_port() chose it."""


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM and wait; SIGKILL if it takes longer than `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PrivateServer:
    """A server process of the tests' own, in a temp dir; subclasses start and stop it."""

    base_dir: Path
    _own_dir: bool  # the temp dir was made here, and is removed by close()
    _atexit_registered = False
    _started_once = False

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _spawn(self) -> None:
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> None:
        """Return once it serves; PortTaken when its port was taken meanwhile."""
        raise NotImplementedError

    def _move_to(self, port: int) -> None:
        raise NotImplementedError

    def _spawn_until_ready(self, timeout: float) -> None:
        """Spawn and wait until it serves. If its port was taken meanwhile, the first start
        moves to another; a restart may not: clients expect it where it was."""
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_ready(timeout)
                break
            except PortTaken:
                if self._started_once or attempt == 2:
                    raise
                self._move_to(free_port())
        self._started_once = True

    def _stop_at_exit(self) -> None:
        """Never leave a server running after the test session, however it ends."""
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its temp dir (if this object made it)."""
        self.stop()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
