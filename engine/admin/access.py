"""``smallcups access``: the operator's Kafka users and rights (as a super user).

- ``grant``: the deployment's ACLs for the users ``kafka.acl_*_users`` name (``init``
  grants them too; run it again after adding a user to one of those lists);
- ``set-password USER --password-file F``: make a SCRAM user or change its password
  (the password is read from the file, never from argv);
- ``revoke USER``: delete every ACL of the user and its SCRAM credentials. A worker run
  as that user stops with AccessDeniedError at its next request and its partitions go
  to the other workers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.core.secrets import read_secret_file
from engine.kafka.acls import deployment_grants, grant, revoke_user
from engine.kafka.users import delete_credentials, set_password


def run_access(config: Config, action: str, user: str, password_file: str) -> int:
    kafka = config.require_kafka()
    if not kafka.security_protocol.sasl:
        raise ConfigError("kafka.security_protocol is not SASL_SSL: there are no users or ACLs")
    match action:
        case "grant":
            grants = deployment_grants(kafka)
            asyncio.run(grant(kafka, grants))
            print(f"granted {len(grants)} ACL bindings on {kafka.topic_prefix}'s topics")
        case "set-password":
            password = read_secret_file(Path(password_file), f"the password of {user!r}")
            asyncio.run(set_password(kafka, user, password, kafka.sasl_mechanism))
            print(f"user {user!r}: {kafka.sasl_mechanism.value} credentials set")
        case "revoke":
            deleted = asyncio.run(revoke_user(kafka, user))
            asyncio.run(delete_credentials(kafka, user, kafka.sasl_mechanism))
            print(f"user {user!r}: {deleted} ACL bindings and its credentials deleted")
        case _:
            raise ConfigError(f"unknown access action {action!r}")
    return 0
