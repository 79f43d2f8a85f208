"""DSNs name their credentials and never carry a password: the name is taken out and
resolved apart, a DSN with a password is refused wherever it enters, and no error ever
shows a password."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import assume, given

from engine.core.config import ShardsConfig, StackConfig, load_config
from engine.core.dsn import (
    carries_password,
    database_login,
    redact,
    refuse_password,
    split_credentials,
)
from engine.core.errors import ConfigError, InfrastructureError
from shards.control import connect
from tests.unit.test_redact import FORMS, PASSWORDS, _encoded

PASSWORD = "sekret-pw"


def test_the_credentials_parameter_is_taken_out_and_the_rest_kept_in_order() -> None:
    dsn = "postgresql://u@db:5432/cup?sslmode=verify-full&credentials=cup-5&sslrootcert=%2Fca.pem"
    assert split_credentials(dsn) == (
        "postgresql://u@db:5432/cup?sslmode=verify-full&sslrootcert=%2Fca.pem",
        "cup-5",
    )
    mysql = split_credentials("mysql://u@db/cup?credentials=mariadb")
    assert mysql == ("mysql://u@db/cup", "mariadb")


@pytest.mark.parametrize(
    "dsn", ["postgresql://u@db/cup", "postgresql://u@db/cup?sslmode=require", "host=db dbname=x"]
)
def test_a_dsn_naming_no_credentials_is_unchanged(dsn: str) -> None:
    assert split_credentials(dsn) == (dsn, None)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u@db/cup?credentials=a&credentials=b",
        "postgresql://u@db/cup?credentials=",
        "postgresql://u@db/cup?credentials=../etc/passwd",
    ],
)
def test_a_bad_credentials_parameter_is_refused(dsn: str) -> None:
    with pytest.raises(ConfigError):
        split_credentials(dsn)


def test_the_password_comes_from_the_environment_first_then_the_folder(tmp_path: Path) -> None:
    (tmp_path / "cup-5").write_text("from-file\n")
    dsn = "postgresql://u@db/cup?credentials=cup-5"
    from_file = database_login(dsn, str(tmp_path), {})
    assert (from_file.dsn, from_file.password) == ("postgresql://u@db/cup", "from-file")
    from_env = database_login(dsn, str(tmp_path), {"SMALLCUPS_CREDENTIALS_CUP_5": "from-env"})
    assert from_env.password == "from-env"
    assert "from-file" not in repr(from_file), "a login's repr never shows its password"
    assert database_login("postgresql://u@db/cup", "", {}).password is None


def test_missing_credentials_say_where_they_were_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SMALLCUPS_CREDENTIALS_CUP_5"):
        database_login("postgresql://u@db/cup?credentials=cup-5", "", {})
    with pytest.raises(ConfigError, match=str(tmp_path)):
        database_login("postgresql://u@db/cup?credentials=cup-5", str(tmp_path), {})


@pytest.mark.parametrize(("form", "write"), FORMS)
@given(password=PASSWORDS)
def test_a_dsn_with_a_password_is_refused_without_showing_it(
    form: str, write: Callable[[str], str], password: str
) -> None:
    rest = form.format("***")
    assume(password not in rest and _encoded(password) not in rest)
    dsn = form.format(write(password))
    assert carries_password(dsn)
    with pytest.raises(ConfigError) as raised:
        database_login(dsn, "", {})
    message = str(raised.value)
    assert password not in message and _encoded(password) not in message
    assert "credentials=NAME" in message


def test_a_dsn_naming_its_credentials_is_not_a_password() -> None:
    dsn = "mysql://u@db/cup?ssl_ca=/etc/ca.pem&credentials=mariadb"
    assert not carries_password(dsn)
    assert redact(dsn) == dsn
    assert refuse_password(dsn, "a DSN") == dsn


def test_the_configuration_refuses_dsns_with_passwords() -> None:
    with pytest.raises(ConfigError) as raised:
        ShardsConfig(control_dsn=f"postgresql://u:{PASSWORD}@db/control")
    assert PASSWORD not in str(raised.value)
    environ = {"SMALLCUPS_SHARDS_CUP_DSNS": f"postgresql://u@db/a,mysql://u:{PASSWORD}@db/b"}
    with pytest.raises(ConfigError) as raised:
        load_config(environ=environ)
    assert PASSWORD not in str(raised.value)
    assert "credentials=NAME" in str(raised.value)


def test_the_stack_dsns_name_credentials_and_verify_the_server_when_secure() -> None:
    secure = StackConfig(state_dir="/tmp/a b")
    ca = "/tmp/a%20b/secrets/tls/ca.pem"
    assert secure.database_dsn("cup") == (
        f"postgresql://smallcups@127.0.0.1:15432/cup?sslmode=verify-full&sslrootcert={ca}"
        "&credentials=postgres"
    )
    assert secure.mysql_dsn("cup") == (
        f"mysql://smallcups@127.0.0.1:13306/cup?ssl_ca={ca}&credentials=mariadb"
    )
    login = database_login(secure.mysql_dsn("cup"), "", {"SMALLCUPS_CREDENTIALS_MARIADB": "pw"})
    assert (login.dsn, login.password) == (
        f"mysql://smallcups@127.0.0.1:13306/cup?ssl_ca={ca}",
        "pw",
    )
    plain = msgspec.structs.replace(secure, security=False)
    assert plain.database_dsn("cup") == "postgresql://smallcups@127.0.0.1:15432/cup"
    assert plain.mysql_dsn("cup") == "mysql://smallcups@127.0.0.1:13306/cup"


async def test_connect_refuses_a_password_before_trying() -> None:
    with pytest.raises(ConfigError) as raised:
        await connect(f"postgresql://u:{PASSWORD}@127.0.0.1:1/db", ShardsConfig())
    assert PASSWORD not in str(raised.value)


async def test_a_failed_connection_never_shows_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncpg's own errors for a malformed DSN may quote it: only their kind is shown."""
    monkeypatch.setenv("SMALLCUPS_CREDENTIALS_CUP", PASSWORD)
    config = ShardsConfig(connect_timeout_seconds=2.0)
    for dsn in ("postgresql://u@127.0.0.1:1/db?sslmode=bogus", "postgresql://u@127.0.0.1:1/db?"):
        with pytest.raises(InfrastructureError) as raised:
            await connect(f"{dsn}&credentials=cup", config)
        assert PASSWORD not in str(raised.value)
        assert "credentials=cup" in str(raised.value)
