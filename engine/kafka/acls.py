"""Kafka ACLs per role, granted by ``smallcups init`` (as a super user) for one deployment:
its topics by their literal names, the workers' group, and the upstream apps' groups by
prefix. Roles (docs/security.md):

- **worker** reads and writes commands (forwards) and the internal topic (saga legs),
  writes results and the DLQ, and is a member of the workers' consumer group;
- **upstream** writes commands, reads results, and reads with consumer groups named
  ``<topic_prefix>.upstream...`` only (never the workers' group: their positions are not
  its business);
- **risk** writes the internal topic (privileged commands, which also carry the risk
  authority's signature) and reads results.

So the upstream role cannot write a leg or a privileged command where a worker takes
one: the broker refuses its writes to the internal topic, and a worker refuses a leg or
a privileged command that arrives on the commands topic (misrouted).

Nothing else is allowed: the broker's authorizer refuses what no ACL allows, and only
its super users (``admin`` in the local stack) create topics or change ACLs.

aiokafka has no ACL API, so the requests are sent with its protocol classes (CreateAcls,
DeleteAcls: Kafka API keys 30 and 31), one binding per request.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest

from engine.core.config import KafkaConfig
from engine.core.errors import InfrastructureError
from engine.kafka.connection import connection

ANY_HOST: Final = "*"


class Resource(enum.IntEnum):
    ANY = 1
    TOPIC = 2
    GROUP = 3


class Pattern(enum.IntEnum):
    ANY = 1
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    ANY = 1
    READ = 3
    WRITE = 4


class Permission(enum.IntEnum):
    ANY = 1
    ALLOW = 3


class Grant(NamedTuple):
    """One ACL binding: ``user`` may ``operation`` on the resource."""

    user: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    @property
    def principal(self) -> str:
        return f"User:{self.user}"


def deployment_grants(kafka: KafkaConfig) -> list[Grant]:
    """Every ACL the deployment's roles need, for the users kafka.acl_* name."""
    topic, group = Resource.TOPIC, Resource.GROUP
    literal, prefixed = Pattern.LITERAL, Pattern.PREFIXED
    read, write = Operation.READ, Operation.WRITE
    commands, internal = kafka.commands_topic, kafka.internal_topic
    results, dlq = kafka.results_topic, kafka.dlq_topic
    rights: dict[str, list[tuple[Resource, str, Pattern, Operation]]] = {
        "worker": [
            (topic, commands, literal, read),
            (topic, commands, literal, write),
            (topic, internal, literal, read),
            (topic, internal, literal, write),
            (topic, results, literal, write),
            (topic, dlq, literal, write),
            (group, kafka.group_id, literal, read),
        ],
        "upstream": [
            (topic, commands, literal, write),
            (topic, results, literal, read),
            (group, kafka.upstream_group_prefix, prefixed, read),
        ],
        "risk": [(topic, internal, literal, write), (topic, results, literal, read)],
    }
    users = {
        "worker": kafka.acl_worker_users,
        "upstream": kafka.acl_upstream_users,
        "risk": kafka.acl_risk_users,
    }
    return [
        Grant(user, *right)
        for role, right_list in rights.items()
        for right in right_list
        for user in users[role]
    ]


def superseded_grants(kafka: KafkaConfig) -> list[Grant]:
    """Rights an earlier version granted that this one no longer does: the risk users'
    write on the commands topic (privileged commands now go to the internal topic), unless
    the same user holds it by another role."""
    commands = kafka.commands_topic
    writers = {
        g.user
        for g in deployment_grants(kafka)
        if g.name == commands and g.operation is Operation.WRITE
    }
    return [
        Grant(user, Resource.TOPIC, commands, Pattern.LITERAL, Operation.WRITE)
        for user in kafka.acl_risk_users
        if user not in writers
    ]


async def grant(kafka: KafkaConfig, grants: Iterable[Grant]) -> None:
    """Create the ACL bindings (creating one that exists changes nothing)."""
    requests = [
        CreateAclsRequest(
            g.resource, g.name, g.pattern, g.principal, ANY_HOST, g.operation, Permission.ALLOW
        )
        for g in grants
    ]
    for response in await _send(kafka, requests):
        for created in response.creation_responses:
            _check(created[0], created[1], "create an ACL")


async def revoke(kafka: KafkaConfig, grants: Iterable[Grant]) -> int:
    """Delete these ACL bindings (a deployment taken down); the number deleted."""
    requests = [
        DeleteAclsRequest(
            g.resource, g.name, g.pattern, g.principal, ANY_HOST, g.operation, Permission.ALLOW
        )
        for g in grants
    ]
    return await _delete(kafka, requests, "delete an ACL")


async def revoke_user(kafka: KafkaConfig, user: str) -> int:
    """Delete every ACL binding of ``user`` (its rights end at its next request); the
    number deleted."""
    request = DeleteAclsRequest(
        Resource.ANY, None, Pattern.ANY, f"User:{user}", None, Operation.ANY, Permission.ANY
    )
    return await _delete(kafka, [request], f"delete the ACLs of {user!r}")


async def _delete(kafka: KafkaConfig, requests: list[Any], what: str) -> int:
    deleted = 0
    for response in await _send(kafka, requests):
        for result in response.filter_responses:
            _check(result[0], result[1], what)
            deleted += len(result[2])
    return deleted


async def _send(kafka: KafkaConfig, requests: list[Any]) -> list[Any]:
    client = AIOKafkaClient(**connection(kafka), request_timeout_ms=kafka.request_timeout_ms)
    await client.bootstrap()
    try:
        node = client.get_random_node()
        return [await client.send(node, request) for request in requests]
    finally:
        await client.close()


def _check(error_code: int, message: str | None, what: str) -> None:
    if error_code:
        raise InfrastructureError(f"the broker refused to {what}: error {error_code} {message}")
