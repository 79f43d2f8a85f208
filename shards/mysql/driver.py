"""Talking to a MariaDB/MySQL cup with asyncmy: the DSN, the session every connection
gets, one round trip of several statements, and which errors pass.

Every connection starts with the same session (``SESSION_SETTINGS``):

- ``time_zone '+00:00'``: DATETIME columns hold UTC, like Postgres's timestamptz;
- ``sql_notes = 0``: no notes (a table that exists already): asyncmy answers every
  warning with one more round trip (SHOW WARNINGS), and a statement of the store that
  warns is a bug;
- a strict ``sql_mode``: a value that does not fit is an error, never truncated or
  rounded (money and ids are never silently changed), and ``\\`` escapes in literals;
- ``READ COMMITTED``: every write of a cup is fenced by the row lock of its partition's
  state row (``SELECT ... FOR UPDATE``), so the stricter default (REPEATABLE READ) would
  add only gap locks, and with them waits and deadlocks between partitions;
- ``idle_transaction_timeout``: the server ends a session that leaves a transaction open
  and idle that long (a worker stopped between the two round trips of a commit), so its
  row locks cannot stall the partition's next owner for good;
- ``innodb_lock_wait_timeout``: how long a statement waits for a row lock before the
  fault passes to the caller (CupUnavailableError) and the worker tries again.

A DSN with ``ssl_ca=PATH`` is reached over TLS (the protocol's upgrade, before the
login): the server's certificate must chain to that CA and name the DSN's host.

Statements go as text (COM_QUERY) with several per round trip (asyncmy enables
CLIENT_MULTI_STATEMENTS): the store writes its literals itself (``ints``, ``text``,
``blob``), so no statement depends on a driver's parameter escaping.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncmy
from asyncmy.converters import escape_string
from asyncmy.errors import InterfaceError, OperationalError

from engine.core.errors import ConfigError

SCHEMES: Final = ("mysql", "mariadb")
"""DSN schemes of a MariaDB/MySQL cup: ``mysql://user@host:port/database``."""
OPTIONS: Final = ("unix_socket", "ssl_ca")
"""The query parameters a MariaDB/MySQL DSN may hold (after its ``credentials=``)."""

DEFAULT_PORT: Final = 3306

IDLE_TRANSACTION_SECONDS: Final = 10
LOCK_WAIT_SECONDS: Final = 10
READ_TIMEOUT_SECONDS: Final = 60
PACKET_BYTES_MAX: Final = 64 * 1024 * 1024
"""The largest statement or row (the server's max_allowed_packet must be as large)."""

SESSION_SETTINGS: Final = (
    "SET time_zone = '+00:00', sql_notes = 0,"
    " sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO',"
    " tx_isolation = 'READ-COMMITTED',"
    f" idle_transaction_timeout = {IDLE_TRANSACTION_SECONDS},"
    f" innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}"
)

FROZEN_ERRNO: Final = 45100
"""Raised by the frozen-row trigger (shards/migrations/mysql/0002): a partition moving."""

PASSING_ERRNOS: Final = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1152,  # aborted connection
        1205,  # lock wait timeout: the holder is slow or stopped
        1213,  # deadlock: the transaction was rolled back
        1290,  # the server runs read-only (--read-only), e.g. while failing over
        1927,  # connection killed
        4031,  # the server ended a session idle in a transaction
        FROZEN_ERRNO,
    }
)
"""Server errors that pass; client errors 2000-2999 (lost, refused, gone) pass too."""


def is_passing(error: BaseException) -> bool:
    """True for a fault of a cup that passes (restart, lost link, lock wait, a partition
    frozen by a move): the caller tries again later. Anything else is a bug."""
    if isinstance(error, OSError | TimeoutError | InterfaceError):
        return True
    if isinstance(error, OperationalError):
        errno = error.args[0] if error.args else 0
        return errno in PASSING_ERRNOS or 2000 <= errno < 3000
    return False


@dataclass(frozen=True, slots=True)
class MysqlAddress:
    """A MariaDB/MySQL DSN without its credentials (engine.core.dsn.database_login takes
    them out), parsed: it holds no secret."""

    host: str
    port: int
    user: str
    database: str
    unix_socket: str
    ssl_ca: str
    """CA certificates (PEM) the server's certificate must chain to; set, the connection
    is TLS and the server's name is checked too. Empty: no TLS."""

    @classmethod
    def parse(cls, dsn: str) -> MysqlAddress:
        """``mysql://user@host[:port]/database[?unix_socket=path][&ssl_ca=path]``; errors
        never quote the DSN."""
        try:
            parts = urlsplit(dsn)
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ConfigError("a MySQL cup DSN is malformed (bad port?)") from None
        if parts.scheme not in SCHEMES:
            raise ConfigError(f"a MySQL cup DSN starts with {' or '.join(SCHEMES)}://")
        if parts.password is not None:
            raise ConfigError("a MySQL cup DSN names its credentials (credentials=NAME)")
        database = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not parts.username or not database or "/" in database:
            raise ConfigError("a MySQL cup DSN names a user, a host and one database")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"a MySQL cup DSN takes only {OPTIONS}, not {unknown}")
        return cls(
            parts.hostname,
            port,
            unquote(parts.username),
            database,
            options.get("unix_socket", ""),
            options.get("ssl_ca", ""),
        )

    def arguments(self, timeout_seconds: float, password: str | None) -> dict[str, Any]:
        """Keyword arguments of asyncmy.connect and asyncmy.create_pool."""
        where: dict[str, Any] = (
            {"unix_socket": self.unix_socket}
            if self.unix_socket
            else {"host": self.host, "port": self.port}
        )
        if self.ssl_ca:
            where["ssl"] = ssl.create_default_context(cafile=self.ssl_ca)
        return {
            **where,
            "user": self.user,
            "password": password or "",
            "database": self.database,
            "charset": "utf8mb4",
            "autocommit": True,
            "init_command": SESSION_SETTINGS,
            "connect_timeout": max(1, round(timeout_seconds)),
            "read_timeout": READ_TIMEOUT_SECONDS,
            "max_allowed_packet": PACKET_BYTES_MAX,
        }


async def connect(
    address: MysqlAddress, password: str | None, timeout_seconds: float
) -> asyncmy.Connection:
    return await asyncmy.connect(**address.arguments(timeout_seconds, password))


async def run(connection: asyncmy.Connection, sql: str) -> list[list[tuple[Any, ...]]]:
    """Send ``sql`` (one or several statements) in one round trip; the rows of each
    statement that returns rows, in order. An error in any statement raises (the ones
    after it did not run; an open transaction stays open: close the connection)."""
    results: list[list[tuple[Any, ...]]] = []
    async with connection.cursor() as cursor:
        await cursor.execute(sql)
        while True:
            if cursor.description is not None:
                results.append(list(await cursor.fetchall()))
            if not await cursor.nextset():
                return results


_PLAIN_TEXT: Final = re.compile(r"[A-Za-z0-9_.:/\- ]*")
"""Text that needs no escaping in a quoted literal: ids and currency codes (fast path)."""


def text(value: str) -> str:
    """A quoted string literal."""
    if _PLAIN_TEXT.fullmatch(value):
        return "'" + value + "'"
    return "'" + escape_string(value) + "'"


def blob(value: bytes | None) -> str:
    """A bytes literal in hex (no escaping to get wrong), or NULL."""
    return "NULL" if value is None else "X'" + value.hex() + "'"


def ints(values: Iterable[int]) -> str:
    """``1,-2,3``: integers for an IN list (``int`` first: a bool or a str-like never
    reaches the statement as text)."""
    return ",".join(str(int(v)) for v in values)


def texts(values: Sequence[str]) -> str:
    return ",".join(map(text, values))
