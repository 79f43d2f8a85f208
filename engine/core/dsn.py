"""DSNs: what of one may be shown, and the credentials it names.

A DSN never carries a password. It names its credentials with the query parameter
``credentials=NAME`` and each process finds the password under that name in its own
secret source (engine.core.secrets.named_credentials: ``$SMALLCUPS_CREDENTIALS_<NAME>``,
else the file ``<shards.credentials_dir>/NAME``), so the control database, argv, logs
and child processes' environments hold only the name:

    postgresql://cups@db:5432/cup_5?sslmode=verify-full&sslrootcert=/etc/ca.pem&credentials=cup-5

``database_login`` takes the parameter out and hands the password over apart, for the
driver's ``password=`` argument. ``refuse_password`` refuses a DSN that carries a
password (``user:pw@``, ``password=``, ``sslpassword=``) or that ``redact`` cannot read
without doubt, wherever a DSN enters: the configuration, ``smallcups shards add`` and
the control database's cups. Errors show a DSN only through ``redact``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote_plus

from engine.core.errors import ConfigError
from engine.core.secrets import check_credentials_name, credentials_env_name, named_credentials

CREDENTIALS_PARAMETER: Final = "credentials"
"""The query parameter of a DSN that names its credentials (not a secret: a name)."""


@dataclass(frozen=True, slots=True)
class DatabaseLogin:
    """What a driver gets: the DSN without ``credentials=``, and the password apart."""

    dsn: str
    password: str | None = field(repr=False)
    """None when the DSN names no credentials (the driver's own defaults then apply)."""


def database_login(dsn: str, credentials_dir: str, environ: Mapping[str, str]) -> DatabaseLogin:
    """``dsn``'s login: the password of the credentials it names, from ``environ`` or
    ``credentials_dir``; ConfigError when it carries a password or its credentials are
    missing."""
    refuse_password(dsn, "a DSN")
    address, name = split_credentials(dsn)
    password = None if name is None else named_credentials(name, credentials_dir, environ)
    return DatabaseLogin(address, password)


def split_credentials(dsn: str) -> tuple[str, str | None]:
    """``dsn`` without its ``credentials=NAME`` parameter, and NAME (None: it names none).
    The other parameters are kept as written, in their order."""
    base, question, query = dsn.partition("?")
    if not question:
        return dsn, None
    kept: list[str] = []
    names: list[str] = []
    for parameter in query.split("&"):
        key, _, value = parameter.partition("=")
        if unquote_plus(key).strip().lower() == CREDENTIALS_PARAMETER:
            names.append(unquote_plus(value))
        else:
            kept.append(parameter)
    if not names:
        return dsn, None
    if len(names) > 1:
        raise ConfigError(f"{redact(dsn)} names its credentials more than once")
    rest = "&".join(kept)
    return (f"{base}?{rest}" if rest else base), check_credentials_name(names[0])


def carries_password(dsn: str) -> bool:
    """True when ``dsn`` carries a password, or may (``redact`` cannot read it without
    doubt)."""
    return redact(dsn) != dsn


def refuse_password(dsn: str, what: str) -> str:
    """``dsn`` unchanged; ConfigError (showing it redacted) when it carries a password."""
    if carries_password(dsn):
        raise ConfigError(
            f"{what} ({redact(dsn)}) carries a password, or cannot be read without doubt: "
            f"name its credentials instead: {CREDENTIALS_PARAMETER}=NAME, the password in "
            f"shards.credentials_dir/NAME or ${credentials_env_name('NAME')}"
        )
    return dsn


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
