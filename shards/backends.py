"""The kinds of cup, told apart by the DSN's scheme: ``postgresql://`` (or
``postgres://``) is a Postgres cup, ``mysql://`` (or ``mariadb://``) a MariaDB/MySQL one.
Everything that reaches a cup by its DSN goes through here, so one cluster mixes both.
"""

from __future__ import annotations

from typing import Final

import asyncmy
import asyncpg
from asyncmy.errors import MySQLError

from engine.core.config import ShardsConfig
from engine.core.dsn import redact
from engine.core.errors import ConfigError, InfrastructureError
from engine.core.store import CupStore
from shards.control import CONNECT_ERRORS, connect, login, safe_detail
from shards.cup_admin import CupAdmin, CupKind
from shards.journal_periods import JournalPeriods
from shards.mysql import driver
from shards.mysql.admin import MysqlCupAdmin
from shards.mysql.journal_periods import MysqlJournalPeriods
from shards.mysql.store import MysqlCupStore
from shards.postgres.admin import PostgresCupAdmin
from shards.postgres.journal_periods import PostgresJournalPeriods
from shards.postgres.store import PostgresCupStore

_SCHEMES: Final = {
    "postgresql": CupKind.POSTGRES,
    "postgres": CupKind.POSTGRES,
    **{scheme: CupKind.MYSQL for scheme in driver.SCHEMES},
}

MYSQL_CONNECT_ERRORS: Final = (OSError, TimeoutError, MySQLError, RuntimeError)
"""What connecting to a MariaDB/MySQL cup may raise (asyncmy raises RuntimeError when the
server goes away in the middle of the handshake)."""


def cup_kind(dsn: str) -> CupKind:
    """The kind of cup a DSN names; a DSN of no known scheme is a configuration error."""
    scheme, separator, _ = dsn.partition("://")
    kind = _SCHEMES.get(scheme.lower()) if separator else None
    if kind is None:
        schemes = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigError(f"a cup DSN starts with one of {schemes} ({redact(dsn)})")
    return kind


async def connect_cup(dsn: str, config: ShardsConfig) -> CupAdmin:
    """One administrative connection to the cup at ``dsn``; errors never show a password."""
    if cup_kind(dsn) is CupKind.POSTGRES:
        return PostgresCupAdmin(await connect(dsn, config))
    credentials = login(dsn, config)
    address = driver.MysqlAddress.parse(credentials.dsn)
    try:
        connection = await driver.connect(
            address, credentials.password, config.connect_timeout_seconds
        )
    except MYSQL_CONNECT_ERRORS as error:
        raise InfrastructureError(
            f"cannot connect to {redact(dsn)}: {type(error).__name__}: {error}"
        ) from None
    return MysqlCupAdmin(connection)


def journal_periods(admin: CupAdmin) -> JournalPeriods:
    """The journal periods of the cup ``admin`` is connected to, on its connection."""
    if isinstance(admin, PostgresCupAdmin):
        return PostgresJournalPeriods(admin.connection)
    if isinstance(admin, MysqlCupAdmin):
        return MysqlJournalPeriods(admin.connection)
    raise ConfigError(f"no journal periods for a {admin.kind} cup")


async def open_store(cup_id: int, dsn: str, config: ShardsConfig) -> CupStore:
    """A pool of connections to one cup, as the worker's store; a cup that cannot be
    reached fails by name, without its password."""
    credentials = login(dsn, config)
    try:
        if cup_kind(dsn) is CupKind.POSTGRES:
            pool = await asyncpg.create_pool(
                credentials.dsn,
                password=credentials.password,
                min_size=1,
                max_size=config.pool_size_max,
                timeout=config.connect_timeout_seconds,
                command_timeout=60,
                reset=_keep_session,
                server_settings={"plan_cache_mode": "force_generic_plan"},
            )
            return PostgresCupStore(cup_id, pool)
        address = driver.MysqlAddress.parse(credentials.dsn)
        arguments = address.arguments(config.connect_timeout_seconds, credentials.password)
        mysql_pool = await asyncmy.create_pool(minsize=1, maxsize=config.pool_size_max, **arguments)
        return MysqlCupStore(cup_id, mysql_pool)
    except (*CONNECT_ERRORS, *MYSQL_CONNECT_ERRORS) as error:
        detail = safe_detail(error)
        raise InfrastructureError(f"cup {cup_id} at {redact(dsn)}: {detail}") from None


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool connections are returned with no session state to undo: skip the reset query.

    The store never leaves a transaction open, sets nothing, listens to nothing, so the
    default reset (one more round trip per acquire) is pure cost on the hot path.
    """
