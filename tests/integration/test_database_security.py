"""The stack's databases let in only TLS clients that verify the server and log in with
the right password; DSNs never hold a password, on argv or in the control database."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import asyncpg
import pytest
from asyncmy.errors import OperationalError

from deploy.local.credentials import stack_passwords
from deploy.local.tls import ensure_certificates
from engine.core.config import Config, to_environ
from engine.core.dsn import carries_password, split_credentials
from loadtest.system import System, drop_system, make_system
from shards.control import connect, login
from shards.mysql.driver import MysqlAddress, run
from shards.mysql.driver import connect as mysql_connect

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "not-the-password-0123456789"
STRANGER_NAME = "db.example"
"""A name the stack's server certificate does not hold (it names localhost, 127.0.0.1)."""
ACCESS_DENIED = 1045
CLI = (sys.executable, "-m", "engine.cli")


@pytest.fixture(autouse=True)
def _secure(stack: Config) -> None:
    if not stack.stack.security:
        pytest.skip("the stack runs without security (stack.security = false)")


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA certificate of another, freshly made CA."""
    return ensure_certificates(tmp_path_factory.mktemp("stranger")).ca


class _ExpectingName(ssl.SSLContext):
    """A client context that expects the server to be ``STRANGER_NAME``, whatever address
    it connects to (asyncio passes the address as ``server_hostname``)."""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = STRANGER_NAME
        return super().wrap_bio(*args, **kwargs)


def _client_context(ca: Path, *, expect_stranger: bool = False) -> ssl.SSLContext:
    context = (_ExpectingName if expect_stranger else ssl.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca))
    return context


# --- Postgres -----------------------------------------------------------------------------


def _postgres(stack: Config) -> tuple[str, str]:
    """The control database's address (no TLS settings, no credentials) and its password."""
    credentials = login(stack.stack.control_dsn, stack.shards)
    assert credentials.password is not None
    parts = urlsplit(credentials.dsn)
    return parts._replace(query="").geturl(), credentials.password


async def test_postgres_lets_in_the_right_credentials_over_tls_with_scram(stack: Config) -> None:
    connection = await connect(stack.stack.control_dsn, stack.shards)
    try:
        assert await connection.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert await connection.fetchval("SHOW password_encryption") == "scram-sha-256"
        stored = await connection.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = current_user"
        )
        assert stored.startswith("SCRAM-SHA-256$")
    finally:
        await connection.close()


async def test_postgres_refuses_a_wrong_password(stack: Config) -> None:
    address, _ = _postgres(stack)
    context = _client_context(stack.stack.tls_ca_path)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(address, password=WRONG_PASSWORD, ssl=context, timeout=10)


async def test_postgres_refuses_plaintext(stack: Config) -> None:
    address, password = _postgres(stack)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(f"{address}?sslmode=disable", password=password, timeout=10)


async def test_postgres_is_refused_by_a_client_that_does_not_trust_its_ca(
    stack: Config, stranger_ca: Path
) -> None:
    address, password = _postgres(stack)
    dsn = f"{address}?sslmode=verify-full&sslrootcert={stranger_ca}"
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        await asyncpg.connect(dsn, password=password, timeout=10)


async def test_postgres_is_refused_by_a_client_expecting_another_name(stack: Config) -> None:
    address, password = _postgres(stack)
    context = _client_context(stack.stack.tls_ca_path, expect_stranger=True)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        await asyncpg.connect(address, password=password, ssl=context, timeout=10)


# --- MariaDB ------------------------------------------------------------------------------


def _mariadb(stack: Config) -> tuple[dict[str, Any], str]:
    """asyncmy.connect's arguments for a MariaDB cup without TLS or password, and the
    password."""
    if stack.stack.mysql_cups == 0:
        pytest.skip("the stack runs no MariaDB server (stack.mysql_cups = 0)")
    credentials = login(stack.stack.cup_dsns[-1], stack.shards)
    assert credentials.password is not None
    address = MysqlAddress.parse(credentials.dsn)
    arguments = address.arguments(10, None)
    del arguments["ssl"]
    return arguments, credentials.password


async def test_mariadb_lets_in_the_right_credentials_over_tls(stack: Config) -> None:
    arguments, password = _mariadb(stack)
    connection = await asyncmy.connect(
        **{**arguments, "password": password, "ssl": _client_context(stack.stack.tls_ca_path)}
    )
    try:
        [[(_, cipher)]] = await run(connection, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cipher, "the session is encrypted"
    finally:
        await connection.ensure_closed()


async def test_mariadb_refuses_a_wrong_password(stack: Config) -> None:
    arguments, _ = _mariadb(stack)
    context = _client_context(stack.stack.tls_ca_path)
    with pytest.raises(OperationalError) as raised:
        await asyncmy.connect(**{**arguments, "password": WRONG_PASSWORD, "ssl": context})
    assert raised.value.args[0] == ACCESS_DENIED


async def test_mariadb_refuses_plaintext(stack: Config) -> None:
    """The right password without TLS: MariaDB 10.11 answers require_secure_transport's
    refusal as a denied access (the same arguments with TLS get in, above)."""
    arguments, password = _mariadb(stack)
    with pytest.raises(OperationalError) as raised:
        await asyncmy.connect(**{**arguments, "password": password})
    assert raised.value.args[0] == ACCESS_DENIED


async def test_mariadb_is_refused_by_a_client_that_does_not_trust_its_ca(
    stack: Config, stranger_ca: Path
) -> None:
    arguments, password = _mariadb(stack)
    context = _client_context(stranger_ca)
    with pytest.raises(OperationalError) as raised:
        await asyncmy.connect(**{**arguments, "password": password, "ssl": context})
    assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)


async def test_mariadb_is_refused_by_a_client_expecting_another_name(stack: Config) -> None:
    arguments, password = _mariadb(stack)
    context = _client_context(stack.stack.tls_ca_path, expect_stranger=True)
    with pytest.raises(OperationalError, match="mismatch") as raised:
        await asyncmy.connect(**{**arguments, "password": password, "ssl": context})
    assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)


async def test_a_mariadb_cup_dsn_connects_with_its_named_credentials(stack: Config) -> None:
    arguments, _ = _mariadb(stack)
    credentials = login(stack.stack.cup_dsns[-1], stack.shards)
    connection = await mysql_connect(MysqlAddress.parse(credentials.dsn), credentials.password, 10)
    try:
        assert await run(connection, "SELECT CURRENT_USER()") == [
            [(f"{arguments['user']}@127.0.0.1",)]
        ]
    finally:
        await connection.ensure_closed()


# --- DSNs never hold a password -----------------------------------------------------------


@pytest.fixture
async def system(stack: Config, tmp_path: Path) -> AsyncIterator[System]:
    mysql_cups = min(1, stack.stack.mysql_cups)
    made = await make_system(stack, tmp_path, partitions=4, cups=1, mysql_cups=mysql_cups)
    yield made
    await drop_system(stack, made)


async def test_shards_add_refuses_a_dsn_with_a_password_without_showing_it(
    stack: Config, system: System
) -> None:
    secret = "sekret-" + os.urandom(6).hex()
    for dsn in (
        f"postgresql://smallcups:{secret}@127.0.0.1:{stack.stack.postgres_port}/x",
        f"mysql://smallcups@127.0.0.1:{stack.stack.mariadb_port}/x?password={secret}",
    ):
        child = await asyncio.create_subprocess_exec(
            *CLI,
            "shards",
            "add",
            dsn,
            env={**os.environ, **to_environ(system.config)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        printed, _ = await child.communicate()
        output = printed.decode()
        assert child.returncode != 0
        assert "credentials=NAME" in output
        assert secret not in output


async def test_the_control_database_holds_addresses_and_credentials_names_only(
    stack: Config, system: System
) -> None:
    passwords = stack_passwords(stack.stack.secrets_path)
    assert passwords, "the stack made its passwords"
    control = await connect(system.config.control_dsn, stack.shards)
    try:
        controls = await control.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE '%control'"
        )
    finally:
        await control.close()
    stored: list[str] = []
    for row in controls:
        dsn = stack.stack.database_dsn(row["datname"])
        connection = await connect(dsn, stack.shards)
        try:
            if await connection.fetchval("SELECT to_regclass('cups') IS NOT NULL"):
                stored += [r["dsn"] for r in await connection.fetch("SELECT dsn FROM cups")]
        finally:
            await connection.close()
    assert set(system.shard_map.cups.values()) <= set(stored)
    for dsn in stored:
        assert not carries_password(dsn)
        assert split_credentials(dsn)[1] is not None, "every cup names its credentials"
        assert not any(password in dsn for password in passwords)
