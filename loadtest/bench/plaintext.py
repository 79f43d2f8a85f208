"""The ``_plaintext`` modes' stack: a second local stack beside the shared one, with
security off (plaintext Kafka and Postgres, no passwords, no ACLs) and no MariaDB, in
``<state_dir>/plaintext`` on the shared stack's ports + PORT_SHIFT. The bench starts it
for its first plaintext mode and stops it at the end, so a run measures the same engine
with security on and off side by side."""

from __future__ import annotations

import asyncio
from typing import Final

import msgspec

from deploy.local.config import local_config
from deploy.local.stack import stack_down, stack_up
from engine.core.config import Config, StackConfig

PORT_SHIFT: Final = 20
"""The chaos suite's stack is on + 10."""


def plaintext_stack(stack: StackConfig) -> StackConfig:
    return msgspec.structs.replace(
        stack,
        state_dir=str(stack.state_path / "plaintext"),
        security=False,
        mysql_cups=0,
        prometheus=False,
        kafka_port=stack.kafka_port + PORT_SHIFT,
        kafka_controller_port=stack.kafka_controller_port + PORT_SHIFT,
        postgres_port=stack.postgres_port + PORT_SHIFT,
        mariadb_port=stack.mariadb_port + PORT_SHIFT,
        kafka_proxied_port=0,
        kafka_proxied_advertised_port=0,
    )


async def plaintext_base(base: Config) -> Config:
    """``base``'s worker settings on the plaintext stack (started if it is not running)."""
    stack = plaintext_stack(base.stack)
    await asyncio.to_thread(stack_up, stack)
    return local_config(stack, Config(worker=base.worker))


def stop_plaintext(base: Config) -> None:
    stack_down(plaintext_stack(base.stack))
