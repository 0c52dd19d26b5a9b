"""FreePBX's CDR in MariaDB/MySQL (`asteriskcdrdb.cdr`), through PyMySQL."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql

from agent.cdr import CdrQuery
from agent.cdr.sql import SqlLookup
from agent.errors import ConfigError, TransientError
from agent.model import CallInfo

# Where Debian, RHEL-likes (FreePBX distro) and others put the server's socket.
SOCKET_CANDIDATES = (
    "/run/mysqld/mysqld.sock",
    "/var/run/mysqld/mysqld.sock",
    "/var/lib/mysql/mysql.sock",
)
_NO_SUCH_TABLE = 1146
_READ_ONLY_PRIVILEGES = {"SELECT", "USAGE", "SHOW VIEW"}


def find_socket() -> str:
    for candidate in SOCKET_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return SOCKET_CANDIDATES[0]


def _quote(name: str) -> str:
    return f"`{name}`"


class MysqlCdr:
    name = "mysql"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        socket: str | None,
        user: str,
        password: str | None,
        database: str,
        table: str,
        timeout: float = 5,
    ) -> None:
        # As in PHP, "localhost" means the Unix socket; PyMySQL would use TCP.
        self.socket = socket or (find_socket() if host == "localhost" else None)
        self.host, self.port = host, port
        self.user, self._password = user, password
        self.database, self.table = database, table
        self.timeout = timeout
        self._conn: pymysql.connections.Connection[Any] | None = None
        self._lookup: SqlLookup | None = None

    def _where(self) -> str:
        place = f"socket {self.socket}" if self.socket else f"{self.host}:{self.port}"
        return f"{self.user}@{place}/{self.database}.{self.table}"

    def _connect(self) -> SqlLookup:
        if self._lookup is not None:
            return self._lookup
        options: dict[str, Any] = {
            "user": self.user,
            "password": self._password or "",
            "database": self.database,
            "connect_timeout": self.timeout,
            "read_timeout": self.timeout,
            "write_timeout": self.timeout,
            "charset": "utf8mb4",
            "autocommit": True,
        }
        try:
            conn = (
                self._open_socket(options)
                if self.socket
                else pymysql.connect(host=self.host, port=self.port, **options)
            )
        except (OSError, pymysql.err.OperationalError) as exc:
            raise TransientError(f"CDR database {self._where()}: {exc.args[-1]}") from exc
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW COLUMNS FROM {_quote(self.table)}")
                columns = {str(row[0]).lower() for row in cur.fetchall()}
        except pymysql.err.MySQLError as exc:
            conn.close()
            if exc.args and exc.args[0] == _NO_SUCH_TABLE:
                raise ConfigError(
                    f"CDR table {self.database}.{self.table} does not exist (cdr.table?)"
                ) from exc
            raise TransientError(f"CDR database {self._where()}: {exc}") from exc
        self._conn = conn
        self._lookup = SqlLookup(
            table=self.table, columns=columns, run=self._run, mark="%s", quote=_quote
        )
        return self._lookup

    def _open_socket(self, options: dict[str, Any]) -> pymysql.connections.Connection[Any]:
        # PyMySQL leaks its socket when the server is down; connecting it here closes it.
        # TLS means nothing on a local socket and costs a context per connection.
        assert self.socket is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket)
        except OSError:
            sock.close()
            raise
        conn = pymysql.connect(
            unix_socket=self.socket, defer_connect=True, ssl_disabled=True, **options
        )
        conn.connect(sock)
        return conn

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute(sql, list(params))
            return list(cur.fetchall())

    def lookup(self, query: CdrQuery) -> CallInfo | None:
        lookup = self._connect()
        try:
            return lookup.lookup(query)
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            self.close()  # reconnect on the next lookup
            raise TransientError(f"CDR database {self._where()}: {exc}") from exc

    def check(self) -> str:
        lookup = self._connect()
        missing = {"linkedid", "recordingfile", "cnum", "cnam"} - lookup.columns
        note = f" (old table without {', '.join(sorted(missing))})" if missing else ""
        return f"mysql {self._where()}{note}"

    def advice(self) -> list[str]:
        """A read-only user is safer than FreePBX's own: say how to make one."""
        assert self._connect() is not None and self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute("SHOW GRANTS FOR CURRENT_USER()")
            grants = [str(row[0]) for row in cur.fetchall()]
        if all(_read_only(grant) for grant in grants):
            return []
        return [
            f"the CDR user {self.user!r} can do more than read;"
            " a dedicated read-only user is safer:",
            "  CREATE USER 'recsync'@'localhost' IDENTIFIED BY '<password>';",
            f"  GRANT SELECT ON {self.database}.* TO 'recsync'@'localhost';",
        ]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(pymysql.err.Error):
                self._conn.close()
        self._conn = self._lookup = None


_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON ", re.I)


def _read_only(grant: str) -> bool:
    match = _GRANT.match(grant)
    if match is None:  # e.g. GRANT PROXY / role lines: not data privileges
        return True
    privileges = {p.strip().upper() for p in match["privileges"].split(",")}
    return privileges <= _READ_ONLY_PRIVILEGES
