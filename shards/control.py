"""The control database: the settings every process must agree on, the cups, the shard map."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import unquote_plus

import asyncpg

from engine.core.errors import ConfigError, InfrastructureError
from engine.core.records import ShardMap
from shards.migrate import migrate

MAP_CHANNEL = "smallcups_shard_map"
"""NOTIFY channel: its payload is the shard map's new version."""


_MASK = "***"
_SECRET_KEYS = frozenset({"password", "sslpassword"})
_URL_PREFIX = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = re.compile(r"(?:\[[\w:.%~-]*\]|[\w.%~-]*)(?::[0-9]*)?")
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = " \t\n\r\v\f"  # libpq's isspace()


def redact(dsn: str) -> str:
    """A DSN fit for logs and errors: every password replaced by ``***``; never raises.

    URLs (any ``scheme://``, multi-host too) lose the password in the userinfo and the
    values of ``password`` and ``sslpassword`` query parameters; libpq ``key=value``
    strings lose the values of those keys. A string that cannot be parsed without doubt
    (an ``@`` after the hosts, an open quote, ...) becomes ``scheme://***`` or ``***``.
    """
    try:
        return _redact(dsn, expand_dbname=True)
    except Exception:
        return _MASK


def _redact(dsn: str, expand_dbname: bool) -> str:
    prefix = _URL_PREFIX.match(dsn)
    if prefix is not None:
        url = _redact_url(dsn, prefix.end())
        return f"{prefix[1]}://{_MASK}" if url is None else url
    keywords = _redact_keywords(dsn, expand_dbname)
    return _MASK if keywords is None else keywords


def _redact_url(dsn: str, start: int) -> str | None:
    # An "@" past the netloc is a password with an unencoded "/", "?" or "#", or an "@"
    # in a parameter: which one cannot be told, so nothing is shown.
    netloc = re.match(r"[^/?#]*", dsn[start:])
    if netloc is None or "@" in dsn[start + netloc.end() :]:
        return None
    userinfo, at, hosts = netloc[0].rpartition("@")
    if not all(_HOST.fullmatch(host) for host in hosts.split(",")):
        return None
    path, question, query = dsn[start + netloc.end() :].partition("?")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{_MASK}" if colon else user
    fields = re.split(r"([&;])", query)
    for i in range(0, len(fields), 2):
        key, equals, _ = fields[i].partition("=")
        if not equals and key:  # not a parameter: maybe the tail of a password with a "&"
            fields[i] = _MASK
        elif unquote_plus(key).strip().lower() in _SECRET_KEYS:
            fields[i] = f"{key}={_MASK}"
    return f"{dsn[:start]}{userinfo}{at}{hosts}{path}{question}{''.join(fields)}"


def _redact_keywords(dsn: str, expand_dbname: bool) -> str | None:
    # libpq's conninfo_parse: key = value, the value bare or single-quoted, "\" escaping.
    out: list[str] = []
    i, n = 0, len(dsn)
    while True:
        key_start = _skip_space(dsn, i)
        if key_start == n:
            out.append(dsn[i:])
            return "".join(out)
        key_end = key_start
        while key_end < n and dsn[key_end] != "=" and dsn[key_end] not in _SPACE:
            key_end += 1
        key = dsn[key_start:key_end]
        equals = _skip_space(dsn, key_end)
        if equals == n or dsn[equals] != "=" or not _KEYWORD.fullmatch(key):
            return None
        value_start = _skip_space(dsn, equals + 1)
        parsed = _keyword_value(dsn, value_start)
        if parsed is None:
            return None
        value, value_end = parsed
        out.append(dsn[i:value_start])
        if key.lower() in _SECRET_KEYS:
            out.append(_MASK)
        elif expand_dbname and key == "dbname" and ("=" in value or _URL_PREFIX.match(value)):
            # libpq reads such a dbname as a whole connection string of its own.
            inner = _redact(value, expand_dbname=False)
            escaped = inner.replace("\\", "\\\\").replace("'", "\\'")
            out.append(dsn[value_start:value_end] if inner == value else f"'{escaped}'")
        else:
            out.append(dsn[value_start:value_end])
        i = value_end


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _keyword_value(dsn: str, i: int) -> tuple[str, int] | None:
    """The unescaped value starting at ``i`` and where it ends; None if a quote is open."""
    quoted = i < len(dsn) and dsn[i] == "'"
    if quoted:
        i += 1
    chars: list[str] = []
    while i < len(dsn):
        char = dsn[i]
        if char == "\\":
            chars.append(dsn[i + 1 : i + 2])
            i += 2
        elif quoted and char == "'":
            return "".join(chars), i + 1
        elif not quoted and char in _SPACE:
            break
        else:
            chars.append(char)
            i += 1
    return None if quoted else ("".join(chars), min(i, len(dsn)))


async def initialize_control(
    connection: asyncpg.Connection, cup_dsns: Sequence[str], partitions: int, topic_prefix: str
) -> ShardMap:
    """Create the control schema, register the cups, assign partitions round-robin.

    Idempotent: a second run keeps the existing map and refuses a different partition
    count or topic prefix rather than silently re-routing money.
    """
    await migrate(connection, "control")
    async with connection.transaction():
        await _settle_setting(connection, "partitions", str(partitions))
        await _settle_setting(connection, "topic_prefix", topic_prefix)
        for dsn in cup_dsns:
            await connection.execute(
                "INSERT INTO cups (cup_id, dsn)"
                " SELECT coalesce(max(cup_id) + 1, 0), $1 FROM cups"
                " ON CONFLICT (dsn) DO NOTHING",
                dsn,
            )
        mapped = await connection.fetchval("SELECT count(*) FROM shard_map")
        if mapped == 0:
            cup_ids = [
                r["cup_id"]
                for r in await connection.fetch("SELECT cup_id FROM cups ORDER BY cup_id")
            ]
            await connection.executemany(
                "INSERT INTO shard_map (partition, cup_id, version) VALUES ($1, $2, 1)",
                [(p, cup_ids[p % len(cup_ids)]) for p in range(partitions)],
            )
            await connection.execute(
                "INSERT INTO shard_map_version (version) VALUES (1) ON CONFLICT DO NOTHING"
            )
    return await load_shard_map(connection)


async def _settle_setting(connection: asyncpg.Connection, name: str, value: str) -> None:
    current = await connection.fetchval("SELECT value FROM settings WHERE name = $1", name)
    if current is None:
        await connection.execute("INSERT INTO settings (name, value) VALUES ($1, $2)", name, value)
    elif current != value:
        raise ConfigError(
            f"the control database was initialized with {name}={current}, not {value}"
        )


async def load_shard_map(connection: asyncpg.Connection) -> ShardMap:
    """The map at one version: its queries read one snapshot, so a move is never torn."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        return await _read_shard_map(connection)


async def _read_shard_map(connection: asyncpg.Connection) -> ShardMap:
    settings = {
        r["name"]: r["value"] for r in await connection.fetch("SELECT name, value FROM settings")
    }
    if "partitions" not in settings:
        raise ConfigError("the control database is not initialized: run `smallcups init`")
    version = await connection.fetchval("SELECT version FROM shard_map_version")
    cups = {r["cup_id"]: r["dsn"] for r in await connection.fetch("SELECT cup_id, dsn FROM cups")}
    rows = await connection.fetch("SELECT partition, cup_id, paused FROM shard_map")
    return ShardMap(
        version=version,
        partitions=int(settings["partitions"]),
        topic_prefix=settings["topic_prefix"],
        cups=cups,
        cup_of={r["partition"]: r["cup_id"] for r in rows},
        paused=frozenset(r["partition"] for r in rows if r["paused"]),
    )


async def publish_version(connection: asyncpg.Connection) -> int:
    """Give the map a new version and tell the workers, inside the caller's transaction.

    The NOTIFY is delivered when the transaction commits, so no worker reads a version
    that could still roll back.
    """
    version: int = await connection.fetchval(
        "UPDATE shard_map_version SET version = version + 1 RETURNING version"
    )
    await connection.execute("SELECT pg_notify($1, $2)", MAP_CHANNEL, str(version))
    return version


async def register_cup(connection: asyncpg.Connection, dsn: str) -> int:
    """Add a cup (or find it by its DSN) and publish a new map version; returns its id."""
    async with connection.transaction():
        cup_id: int | None = await connection.fetchval(
            "SELECT cup_id FROM cups WHERE dsn = $1", dsn
        )
        if cup_id is None:
            cup_id = await connection.fetchval(
                "INSERT INTO cups (cup_id, dsn) SELECT coalesce(max(cup_id) + 1, 0), $1"
                " FROM cups RETURNING cup_id",
                dsn,
            )
            await publish_version(connection)
    if cup_id is None:
        raise InfrastructureError(f"cup {redact(dsn)} was not registered")
    return cup_id


async def connect(dsn: str, timeout_seconds: float) -> asyncpg.Connection:
    """Open one connection; errors name the database without its password."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout_seconds)
    except CONNECT_ERRORS as error:
        detail = safe_detail(error)
        raise InfrastructureError(f"cannot connect to {redact(dsn)}: {detail}") from None


CONNECT_ERRORS: Final = (
    OSError,
    TimeoutError,
    ValueError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
"""What connecting to a DSN may raise: the server refused, it was not reached, or the DSN
itself is malformed (asyncpg's ClientConfigurationError, ValueError)."""


def safe_detail(error: BaseException) -> str:
    """An error of a connection attempt, fit for logs: the server's message, but only the
    kind of a DSN parsing error (whose message may quote the DSN, password and all)."""
    if isinstance(error, ValueError | asyncpg.InterfaceError):
        return f"{type(error).__name__} (is the DSN well-formed?)"
    return f"{type(error).__name__}: {error}"
