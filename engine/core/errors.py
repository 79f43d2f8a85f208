"""The error tree of smallcups.

Domain rejections are not exceptions: the ledger returns them as data, a Result with a
reason code. What is left is small::

    SmallcupsError
    ├── ConfigError          misuse: bad configuration or arguments; fix and restart
    ├── StackError           the local development stack could not start or stop
    ├── InfrastructureError  retriable: a broker or a cup failed or timed out; back off, retry
    │   └── FencedError      this worker no longer owns the partition; drop its state
    └── InvariantError       our own bug: a rule that must hold did not; crash loudly

``invariant()`` raises InvariantError and, unlike ``assert``, survives ``python -O``.
"""

from __future__ import annotations


class SmallcupsError(Exception):
    """Root of every error smallcups raises on purpose."""


class ConfigError(SmallcupsError, ValueError):
    """The configuration or a command-line argument is wrong."""


class StackError(SmallcupsError):
    """The local stack (Kafka broker, Postgres cluster) failed to start, stop or answer."""


class InfrastructureError(SmallcupsError):
    """A broker or a cup failed; the operation may be retried after a back-off."""


class FencedError(InfrastructureError):
    """The partition's epoch or next offset moved: another worker owns it now."""


class InvariantError(SmallcupsError):
    """A rule that must always hold was broken: a bug, never bad input."""


def invariant(condition: bool, message: str) -> None:
    """Raise InvariantError when ``condition`` is false (kept under ``python -O``)."""
    if not condition:
        raise InvariantError(message)
