"""The error tree of smallcups.

Domain rejections are not exceptions: the ledger returns them as data, a Result with a
reason code. What is left is small::

    SmallcupsError
    ├── ConfigError              misuse: bad configuration or arguments; fix, restart
    │   └── AccessDeniedError    the brokers refused this process's credentials or rights
    │                            (wrong, revoked, never granted): stop
    ├── StackError               the local development stack could not start or stop
    ├── InfrastructureError      retriable: a broker or a database failed or timed out
    │   └── CupUnavailableError  a cup failed for a passing reason (restart, lost link)
    └── InvariantError           our own bug: a rule that must hold did not; crash loudly

A partition another worker claimed is not an error: the commit round returns it as a
verdict (engine.worker.commit_round), like the ledger returns a rejection.

A store (engine.core.store) raises only these: a driver's own exceptions never cross it,
so the worker reacts the same way to every database behind the protocol.

``invariant()`` raises InvariantError and, unlike ``assert``, survives ``python -O``.
"""

from __future__ import annotations


class SmallcupsError(Exception):
    """Root of every error smallcups raises on purpose."""


class ConfigError(SmallcupsError, ValueError):
    """The configuration or a command-line argument is wrong."""


class AccessDeniedError(ConfigError):
    """The brokers refused this process: its credentials are wrong or revoked, or its user
    lacks a right. Retrying cannot help; the process stops and says which user was
    refused (never with its password). A database's refusal is a connection failure
    (InfrastructureError) that names the database, without its password."""


class StackError(SmallcupsError):
    """The local stack (Kafka broker, Postgres cluster) failed to start, stop or answer."""


class InfrastructureError(SmallcupsError):
    """A broker or a cup failed; the operation may be retried after a back-off."""


class CupUnavailableError(InfrastructureError):
    """A cup failed for a reason that passes (a restart, a shutdown, a refused or lost
    connection, a database closed to connections): back off and try again."""


class InvariantError(SmallcupsError):
    """A rule that must always hold was broken: a bug, never bad input."""


def invariant(condition: bool, message: str) -> None:
    """Raise InvariantError when ``condition`` is false (kept under ``python -O``)."""
    if not condition:
        raise InvariantError(message)
