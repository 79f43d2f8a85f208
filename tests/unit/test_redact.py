"""redact() must hide every password in every DSN form, and keep the rest readable."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.core.dsn import redact


def test_url_user_and_password() -> None:
    assert redact("postgresql://alice:s3cret@db.example:5432/ledger") == (
        "postgresql://alice:***@db.example:5432/ledger"
    )


def test_url_password_without_user() -> None:
    assert redact("postgresql://:s3cret@db.example/ledger") == "postgresql://:***@db.example/ledger"


def test_url_password_in_query() -> None:
    assert redact("postgresql://alice@db.example/ledger?sslmode=require&password=s3cret") == (
        "postgresql://alice@db.example/ledger?sslmode=require&password=***"
    )


def test_url_password_in_userinfo_and_query() -> None:
    assert redact("postgresql://alice:one@db.example/ledger?PassWord=two&application_name=x") == (
        "postgresql://alice:***@db.example/ledger?PassWord=***&application_name=x"
    )


def test_url_percent_encoded_password() -> None:
    dsn = "postgresql://alice:p%40ss%2Fw%3Ad@db.example/ledger?password=a%26b%3Dc&sslmode=require"
    assert redact(dsn) == "postgresql://alice:***@db.example/ledger?password=***&sslmode=require"


def test_url_sslpassword_is_hidden_and_passfile_kept() -> None:
    dsn = "postgresql://alice@db.example/ledger?sslpassword=key&passfile=/etc/pgpass&sslmode=verify-full"
    assert redact(dsn) == (
        "postgresql://alice@db.example/ledger?sslpassword=***&passfile=/etc/pgpass&sslmode=verify-full"
    )


def test_multi_host_url_with_password() -> None:
    assert redact("postgresql://u:pw@h1:5432,h2:5433,[::1]:5434/db?target_session_attrs=any") == (
        "postgresql://u:***@h1:5432,h2:5433,[::1]:5434/db?target_session_attrs=any"
    )


def test_multi_host_url_without_password() -> None:
    dsn = "postgresql://u@h1:5432,h2:5433/db"
    assert redact(dsn) == dsn


def test_postgres_scheme() -> None:
    assert redact("postgres://alice:pw@localhost/ledger") == "postgres://alice:***@localhost/ledger"


def test_mysql_scheme() -> None:
    assert redact("mysql://root:pw@127.0.0.1:3306/ledger?charset=utf8mb4") == (
        "mysql://root:***@127.0.0.1:3306/ledger?charset=utf8mb4"
    )


def test_keyword_form() -> None:
    assert redact("host=db.example port=5432 password=s3cret dbname=ledger") == (
        "host=db.example port=5432 password=*** dbname=ledger"
    )


def test_keyword_form_quoted_value_with_spaces_and_escapes() -> None:
    assert redact(r"host=db password='a b\' c\\' dbname='my db'") == (
        "host=db password=*** dbname='my db'"
    )


def test_keyword_form_spaces_around_equals() -> None:
    assert redact("host = db  password =  s3cret\tdbname= ledger") == (
        "host = db  password =  ***\tdbname= ledger"
    )


def test_keyword_form_sslpassword() -> None:
    assert redact("host=db sslkey=/k.pem sslpassword='key pass' passfile=/p") == (
        "host=db sslkey=/k.pem sslpassword=*** passfile=/p"
    )


def test_keyword_dbname_holding_a_connection_string() -> None:
    # libpq reads a dbname with "=" or a URL prefix as a connection string of its own.
    assert redact("dbname=postgresql://alice:pw@db/ledger connect_timeout=5") == (
        "dbname='postgresql://alice:***@db/ledger' connect_timeout=5"
    )
    assert redact("dbname='host=db password=pw'") == "dbname='host=db password=***'"


@pytest.mark.parametrize(
    "dsn",
    [
        "",
        "postgresql://alice@db.example:5432/ledger?sslmode=require",
        "postgresql:///ledger?host=%2Fvar%2Frun%2Fpostgresql",
        "mysql://root@db/ledger",
        "host=db port=5432 user=alice dbname='my db'",
    ],
)
def test_dsn_without_password_is_unchanged(dsn: str) -> None:
    assert redact(dsn) == dsn


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://alice:pa/ss@db/ledger", "postgresql://***"),  # unencoded "/"
        ("postgresql://alice@db/ledger?password=se@cret", "postgresql://***"),  # unencoded "@"
        ("postgresql://alice:pw/ledger", "postgresql://***"),  # no host: "pw" is no port
        ("host=db password='unterminated", "***"),
        ("password=a b c", "***"),  # "b" is no keyword=value
        ("not a dsn", "***"),
    ],
)
def test_unparseable_dsn_shows_nothing_secret(dsn: str, expected: str) -> None:
    assert redact(dsn) == expected


@given(st.text())
def test_never_raises(dsn: str) -> None:
    assert isinstance(redact(dsn), str)


@given(st.text(alphabet="postgresql:/@?#&=;,'\\ \t%[]x19*"))
def test_never_raises_on_dsn_like_text(dsn: str) -> None:
    assert isinstance(redact(dsn), str)


def _raw(password: str) -> str:
    return password


def _encoded(password: str) -> str:
    return quote(password, safe="")


def _quoted(password: str) -> str:
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _escaped(password: str) -> str:
    return re.sub(r"([\s\\'])", r"\\\1", password)


# Each form takes the password as it would be written there ({} is its place).
FORMS: list[tuple[str, Callable[[str], str]]] = [
    ("postgresql://alice:{}@db.example:5432/ledger?sslmode=require", _encoded),
    ("postgresql://alice:{}@db.example:5432/ledger", _raw),  # written raw, unencoded
    ("postgresql://:{}@db.example/ledger", _encoded),
    (
        "postgresql://alice@db.example/ledger?sslmode=require&password={}&application_name=a",
        _encoded,
    ),
    ("postgres://alice:{0}@h1:5432,h2:5433/ledger?password={0}", _encoded),
    ("postgresql://alice@h1,h2/ledger?sslpassword={}", _encoded),
    ("mysql://root:{}@127.0.0.1:3306/ledger", _encoded),
    ("host=db.example port=5432 password={} dbname=ledger", _quoted),
    ("host=db.example password={} dbname=ledger", _escaped),
    ("host = db.example  password = {} dbname = ledger", _quoted),
    ("host=db.example sslpassword={} sslkey=/k.pem", _quoted),
    ("dbname={} host=db.example", lambda p: _quoted(f"postgresql://alice:{_encoded(p)}@db/x")),
]

PASSWORDS = st.text(
    st.characters(exclude_characters="*").filter(str.isprintable), min_size=4, max_size=40
)


@pytest.mark.parametrize(("form", "write"), FORMS)
@given(password=PASSWORDS)
def test_password_never_appears(form: str, write: Callable[[str], str], password: str) -> None:
    rest = form.format("***")
    assume(password not in rest and _encoded(password) not in rest)
    redacted = redact(form.format(write(password)))
    assert password not in redacted
    assert _encoded(password) not in redacted
