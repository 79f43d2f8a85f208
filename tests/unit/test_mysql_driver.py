"""The MariaDB driver's pure parts: DSNs (never quoted in an error), the literals the
store writes (every string and byte value survives, none breaks out of its quotes), and
which errors pass."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from asyncmy.errors import IntegrityError, InterfaceError, OperationalError
from hypothesis import given
from hypothesis import strategies as st

from deploy.local.tls import ensure_certificates
from engine.core.errors import ConfigError
from shards.backends import cup_kind
from shards.cup_admin import CupKind
from shards.mysql.driver import FROZEN_ERRNO, MysqlAddress, blob, ints, is_passing, text

PASSWORD = "s3cret-p@ss"


def test_a_dsn_parses_into_its_parts() -> None:
    address = MysqlAddress.parse("mysql://cups@db.local:3307/cup_5")
    assert address == MysqlAddress("db.local", 3307, "cups", "cup_5", "", "")
    assert address.arguments(5, PASSWORD)["password"] == PASSWORD
    assert address.arguments(5, None)["password"] == ""
    assert "ssl" not in address.arguments(5, None)
    socket = MysqlAddress.parse("mariadb://root@localhost/cup?unix_socket=/run/m.sock")
    assert socket.port == 3306 and socket.unix_socket == "/run/m.sock"
    assert socket.arguments(5, None)["unix_socket"] == "/run/m.sock"
    assert "host" not in socket.arguments(5, None)


def test_ssl_ca_turns_on_tls_that_verifies_the_chain_and_the_name(tmp_path: Path) -> None:
    ca = ensure_certificates(tmp_path).ca
    address = MysqlAddress.parse(f"mysql://cups@127.0.0.1/cup?ssl_ca={ca}")
    context = address.arguments(5, None)["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://u:{PASSWORD}@h/db",
        f"mysql://u:{PASSWORD}@h:99999/db",
        f"mysql://u:{PASSWORD}@h/",
        f"mysql://u:{PASSWORD}@h/a/b",
        f"mysql://:{PASSWORD}@h/db",
        f"mysql://u:{PASSWORD}@h/db?ssl=1",
        f"mysql://u:{PASSWORD}@h/db",
    ],
)
def test_a_bad_dsn_is_refused_without_quoting_it(dsn: str) -> None:
    with pytest.raises(ConfigError) as raised:
        MysqlAddress.parse(dsn)
    assert PASSWORD not in str(raised.value)


def test_the_scheme_picks_the_kind() -> None:
    assert cup_kind("postgresql://u@h/db") is CupKind.POSTGRES
    assert cup_kind("postgres://u@h/db") is CupKind.POSTGRES
    assert cup_kind("mysql://u@h/db") is CupKind.MYSQL
    assert cup_kind("MariaDB://u@h/db") is CupKind.MYSQL
    with pytest.raises(ConfigError) as raised:
        cup_kind(f"oracle://u:{PASSWORD}@h/db")
    assert PASSWORD not in str(raised.value)


def _unquote(literal: str) -> str:
    """What MySQL reads from a quoted literal (backslash escapes, as the session sets)."""
    assert literal[0] == literal[-1] == "'"
    escapes = {"0": "\0", "n": "\n", "r": "\r", "Z": "\032"}
    out, i, body = [], 0, literal[1:-1]
    while i < len(body):
        char = body[i]
        if char == "\\":
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            assert char != "'", f"an unescaped quote ends the literal early: {literal!r}"
            out.append(char)
            i += 1
    return "".join(out)


@given(st.text())
def test_a_text_literal_reads_back_as_the_text(value: str) -> None:
    assert _unquote(text(value)) == value


@given(st.binary() | st.none())
def test_a_blob_literal_is_hex_or_null(value: bytes | None) -> None:
    literal = blob(value)
    if value is None:
        assert literal == "NULL"
    else:
        assert literal.startswith("X'") and bytes.fromhex(literal[2:-1]) == value


def test_ints_are_integers_only() -> None:
    assert ints([1, -2, True, 2**63 - 1]) == "1,-2,1,9223372036854775807"
    with pytest.raises(ValueError):
        ints(["1); DROP TABLE journal; --"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("error", "passes"),
    [
        (OperationalError(2013, "Lost connection to server during query"), True),
        (OperationalError(2003, "Can't connect"), True),
        (OperationalError(1213, "Deadlock found"), True),
        (OperationalError(1205, "Lock wait timeout exceeded"), True),
        (OperationalError(FROZEN_ERRNO, "the partition is frozen"), True),
        (InterfaceError(0, "Not connected"), True),
        (ConnectionResetError(), True),
        (OperationalError(45101, "journal rows are never changed"), False),
        (OperationalError(4025, "CONSTRAINT failed"), False),
        (IntegrityError(1062, "Duplicate entry"), False),
    ],
)
def test_which_errors_pass(error: BaseException, passes: bool) -> None:
    assert is_passing(error) is passes
