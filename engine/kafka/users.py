"""SCRAM users of the brokers: set a user's password, or delete the user's credentials
(revocation: its next connection is refused; engine.kafka.acls.revoke_user takes its
rights from the connections it has). For the operator (a super user) only.

aiokafka has no API for it, so the request is built with its protocol classes:
AlterUserScramCredentials (Kafka API key 51, version 0, a flexible version). The broker
stores salted credentials only: the salted password is computed here (RFC 5802's Hi:
PBKDF2 with HMAC over the mechanism's hash) from a random salt, so the password itself
never travels.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from engine.core.config import KafkaConfig, SaslMechanism
from engine.core.errors import InfrastructureError
from engine.kafka.connection import connection

SCRAM_ITERATIONS: Final = 8192
SALT_BYTES: Final = 32
_MECHANISMS: Final = {
    SaslMechanism.SCRAM_SHA_256: (1, "sha256"),
    SaslMechanism.SCRAM_SHA_512: (2, "sha512"),
}


class _AlterScramResponse(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScramStruct(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScram(Request[_AlterScramStruct]):  # type: ignore[misc]
    API_KEY = 51

    def __init__(
        self, deletions: list[tuple[str, int]], upsertions: list[tuple[str, int, int, bytes, bytes]]
    ):
        self._deletions = deletions
        self._upsertions = upsertions

    def build(self, request_struct_class: type[_AlterScramStruct]) -> _AlterScramStruct:
        return request_struct_class(
            [(name, mechanism, {}) for name, mechanism in self._deletions],
            [(*upsertion, {}) for upsertion in self._upsertions],
            {},
        )


def salted_password(password: str, salt: bytes, iterations: int, mechanism: SaslMechanism) -> bytes:
    """RFC 5802's SaltedPassword: Hi(password, salt, i), PBKDF2 with HMAC."""
    _, digest = _MECHANISMS[mechanism]
    return hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)


async def set_password(
    kafka: KafkaConfig,
    user: str,
    password: str,
    mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512,
) -> None:
    """Create ``user`` or change its password."""
    code, _ = _MECHANISMS[mechanism]
    salt = secrets.token_bytes(SALT_BYTES)
    salted = salted_password(password, salt, SCRAM_ITERATIONS, mechanism)
    await _alter(kafka, _AlterScram([], [(user, code, SCRAM_ITERATIONS, salt, salted)]))


async def delete_credentials(
    kafka: KafkaConfig, user: str, mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
) -> None:
    """Delete ``user``'s credentials: it cannot authenticate any more."""
    code, _ = _MECHANISMS[mechanism]
    await _alter(kafka, _AlterScram([(user, code)], []))


async def _alter(kafka: KafkaConfig, request: _AlterScram) -> None:
    client = AIOKafkaClient(**connection(kafka), request_timeout_ms=kafka.request_timeout_ms)
    await client.bootstrap()
    try:
        response = await client.send(client.get_random_node(), request)
    finally:
        await client.close()
    for user, error_code, message, _ in response.results:
        if error_code:
            raise InfrastructureError(
                f"the broker refused to change the credentials of {user!r}: "
                f"error {error_code} {message}"
            )
