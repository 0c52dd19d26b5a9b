"""A private, real MariaDB server for tests, with the FreePBX CDR schema.

`MariaDB` runs Debian's `mariadbd` in a temp dir: its own datadir (made by
`mariadb-install-db`), a Unix socket and a free TCP port on 127.0.0.1, no binary log,
small buffers, and no option files (`--no-defaults`), so nothing of a system MariaDB is
touched. `stop()` then `start()` reuses the datadir, socket and port: tests take the
database away mid-run and bring it back with the data intact.

The pytest fixtures (registered through `pytest_plugins` in tests/conftest.py):

- `mariadb`: one server per test session, started the first time a test asks for it,
  with database `asteriskcdrdb` and the tables of freepbx_cdr.sql (`cdr`, `cdr_old`).
- `cdr_db`: the same server, running, with both CDR tables emptied before the test.

Without `mariadbd` the fixtures skip, except in CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support.servers import PortTaken, PrivateServer, free_port, require, terminate

SCHEMA_FILE = Path(__file__).with_name("freepbx_cdr.sql")
CDR_DATABASE = "asteriskcdrdb"
CDR_TABLES = ("cdr", "cdr_old")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_POLL_INTERVAL = 0.05
# sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
# Where Debian puts the server; /usr/sbin is not on a normal user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")


class MariaDBError(RuntimeError):
    """The test server could not be set up, started or stopped."""


class _PortTaken(MariaDBError, PortTaken):
    """mariadbd could not bind its TCP port."""


def find_program(name: str) -> str | None:
    """`name` on PATH or in the sbin directories Debian installs servers into."""
    extra = os.pathsep.join(_EXTRA_BIN_DIRS)
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def missing_programs() -> list[str]:
    """The MariaDB programs this module needs that are not installed."""
    return [name for name in ("mariadbd", "mariadb-install-db") if find_program(name) is None]


def _short_temp_dir() -> Path:
    """A new temp dir whose socket path stays within the Unix limit."""
    base = Path(tempfile.mkdtemp(prefix="recsync-mariadb-"))
    if len(str(base / "mysqld.sock")) > _MAX_SOCKET_PATH:
        base.rmdir()
        base = Path(tempfile.mkdtemp(prefix="mdb-", dir="/tmp"))
    return base


def split_sql(script: str) -> list[str]:
    """The statements of an SQL file: `--` comment lines dropped, split at a final `;`."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    statements = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [statement.strip() for statement in statements if statement.strip()]


class MariaDB(PrivateServer):
    """One private `mariadbd`; see the module docstring."""

    host = "127.0.0.1"

    def __init__(self, base_dir: Path | None = None) -> None:
        self._own_dir = base_dir is None
        self.base_dir = _short_temp_dir() if base_dir is None else base_dir
        self.datadir = self.base_dir / "data"
        self.log_path = self.base_dir / "mysqld.log"
        self._socket = self.base_dir / "mysqld.sock"
        if len(str(self._socket)) > _MAX_SOCKET_PATH:
            raise MariaDBError(f"socket path too long for a Unix socket: {self._socket}")
        self._port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where this start's part of the (appended) log begins
        # Seconds the last start() took (the first one includes mariadb-install-db).
        self.start_seconds: float | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def socket(self) -> str:
        return str(self._socket)

    @property
    def port(self) -> int:
        return self._port

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server (initialising the datadir the first time); wait until it serves."""
        if self.is_running:
            return
        missing = missing_programs()
        if missing:
            raise MariaDBError(f"not installed: {', '.join(missing)} (Debian mariadb-server)")
        began = time.monotonic()
        if not (self.datadir / "mysql").is_dir():
            self._install_db()
        self._stop_at_exit()
        self._spawn_until_ready(timeout)
        self.start_seconds = time.monotonic() - began

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shut down cleanly (SIGTERM) and wait; SIGKILL if it takes longer than `timeout`."""
        process = self._process
        if process is None:
            return
        terminate(process, timeout)
        self._process = None

    def kill(self) -> None:
        """Kill the server without a clean shutdown (a crash); `start()` recovers the data."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._process = None

    def _move_to(self, port: int) -> None:
        self._port = port

    def _server_options(self) -> list[str]:
        options = [
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=8M",
            # io_uring/libaio are often unavailable in containers; tests need no speed.
            "--innodb-use-native-aio=OFF",
        ]
        if os.geteuid() == 0:
            options.append("--user=root")
        return options

    def _install_db(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        install_log = self.base_dir / "install.log"
        command = [
            str(find_program("mariadb-install-db")),
            *self._server_options(),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        with install_log.open("wb") as log:
            result = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=120
            )
        if result.returncode != 0:
            raise MariaDBError(
                f"mariadb-install-db failed with exit code {result.returncode}:\n"
                + _tail(install_log)
            )

    def _spawn(self) -> None:
        command = [
            str(find_program("mariadbd")),
            *self._server_options(),
            f"--socket={self._socket}",
            f"--port={self._port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.base_dir / 'mysqld.pid'}",
            f"--log-error={self.log_path}",
            f"--tmpdir={self.base_dir}",
            "--skip-log-bin",
            "--skip-name-resolve",
        ]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with (self.base_dir / "console.log").open("ab") as console:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
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
                error_type = _PortTaken if "Bind on TCP/IP port" in log_tail else MariaDBError
                raise error_type(
                    f"mariadbd exited with code {process.returncode} while starting "
                    f"(port {self._port}):\n{log_tail}"
                )
            try:
                with self.connect(connect_timeout=2):
                    return
            except pymysql.err.OperationalError as error:
                last_error = error
            if time.monotonic() >= deadline:
                self.stop()
                raise MariaDBError(
                    f"mariadbd did not accept connections within {timeout:.0f} s "
                    f"(last error: {last_error}):\n{_tail(self.log_path, self._log_offset)}"
                )
            time.sleep(_POLL_INTERVAL)

    # -- SQL -------------------------------------------------------------------------------

    def connect(
        self,
        database: str | None = None,
        user: str = "root",
        password: str | None = None,
        *,
        tcp: bool = False,
        connect_timeout: float = 10,
    ) -> pymysql.Connection[Any]:
        """A new autocommit connection, through the socket (or TCP to 127.0.0.1)."""
        options: dict[str, Any] = {
            "user": user,
            "password": password or "",
            "database": database,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": connect_timeout,
            # PyMySQL >= 1.2 "prefers" TLS and builds a default SSL context (CA bundle and
            # all, ~40 ms) for every connection; this server has no TLS anyway.
            "ssl_disabled": True,
        }
        if tcp:
            return pymysql.connect(host=self.host, port=self._port, **options)
        # PyMySQL leaks its Unix socket when the connect() itself fails (server down), and
        # the ResourceWarning turns into an error in some later test. So connect the socket
        # here, closing it on failure, and hand it over.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(self.socket)
        except OSError as error:
            sock.close()
            raise pymysql.err.OperationalError(
                2002, f"Can't connect to MariaDB through socket {self.socket!r} ({error})"
            ) from error
        connection = pymysql.connect(unix_socket=self.socket, defer_connect=True, **options)
        connection.connect(sock)  # closes sock if the handshake fails
        return connection

    def execute(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        database: str | None = CDR_DATABASE,
    ) -> list[tuple[Any, ...]]:
        """Run one statement as root on a fresh connection; its rows (empty if none)."""
        with self.connect(database) as connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def insert_cdr(self, row: Mapping[str, Any], table: str = "cdr") -> None:
        """Insert one CDR row; columns left out take the table's defaults."""
        columns = ", ".join(f"`{name}`" for name in row)
        marks = ", ".join(["%s"] * len(row))
        self.execute(f"INSERT INTO `{table}` ({columns}) VALUES ({marks})", list(row.values()))

    def create_freepbx_cdr(self) -> None:
        """(Re)create database `asteriskcdrdb` with the tables of freepbx_cdr.sql, empty."""
        self.execute(
            f"CREATE DATABASE IF NOT EXISTS `{CDR_DATABASE}` "
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            database=None,
        )
        with self.connect(CDR_DATABASE) as connection, connection.cursor() as cursor:
            for statement in split_sql(SCHEMA_FILE.read_text(encoding="utf-8")):
                cursor.execute(statement)

    def create_user(self, name: str, password: str, grants: str = "SELECT") -> None:
        """`name`@localhost and `name`@127.0.0.1 with `grants` on asteriskcdrdb.* only."""
        with self.connect() as connection, connection.cursor() as cursor:
            for host in ("localhost", "127.0.0.1"):
                cursor.execute(
                    "CREATE OR REPLACE USER %s@%s IDENTIFIED BY %s", (name, host, password)
                )
                cursor.execute(f"GRANT {grants} ON `{CDR_DATABASE}`.* TO %s@%s", (name, host))

    def truncate_cdr(self) -> None:
        """Empty the CDR tables, recreating the schema if a test dropped a table."""
        present = {
            row[0]
            for row in self.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (CDR_DATABASE,),
                database=None,
            )
        }
        if not set(CDR_TABLES) <= present:
            self.create_freepbx_cdr()
            return
        with self.connect(CDR_DATABASE) as connection, connection.cursor() as cursor:
            # TRUNCATE waits for every open transaction that read the table (a connection a
            # test left open); fail in seconds rather than the default day.
            cursor.execute("SET SESSION lock_wait_timeout = 10")
            for table in CDR_TABLES:
                cursor.execute(f"TRUNCATE TABLE `{table}`")


def _tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    """The last `lines` lines of `path` from byte `offset` on, for error messages."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            text = file.read().decode("utf-8", errors="replace")
    except OSError as error:
        return f"({path}: {error})"
    return "\n".join(text.splitlines()[-lines:])


# -- pytest fixtures ----------------------------------------------------------------------


def _require_mariadb() -> None:
    require(
        missing_programs(),
        "MariaDB",
        "run scripts/test as root, which installs Debian's mariadb-server",
    )


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """The session's MariaDB server, with the FreePBX CDR schema loaded."""
    _require_mariadb()
    server = MariaDB()
    try:
        server.start()
        server.create_freepbx_cdr()
        yield server
    finally:
        server.close()


@pytest.fixture
def cdr_db(mariadb: MariaDB) -> MariaDB:
    """The session's server, running (a test may have stopped it), CDR tables empty."""
    mariadb.start()
    mariadb.truncate_cdr()
    return mariadb
