"""The client's results reader: it never dies silently, and trusts no record."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import pytest
from aiokafka.errors import KafkaError

from engine.core.config import KafkaConfig, KafkaSecurityProtocol
from engine.core.errors import ConfigError, InfrastructureError
from engine.core.messages import Deposit, Result, Status, Transfer, credit_leg_id, encode
from engine.core.routing import partition_of
from engine.core.saga import credit_leg
from engine.kafka.client import Client

PARTITIONS = 4


class Record(NamedTuple):
    partition: int
    offset: int
    value: bytes | None


class FakeConsumer:
    """Hands out the given batches, then raises ``error`` (or waits forever)."""

    def __init__(self, batches: list[list[Record]], error: Exception | None = None):
        self.batches = batches
        self.error = error

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        if self.batches:
            return {"tp": self.batches.pop(0)}
        if self.error is not None:
            raise self.error
        await asyncio.sleep(3600)
        return {}


PLAINTEXT = KafkaConfig(
    bootstrap_servers="127.0.0.1:1", security_protocol=KafkaSecurityProtocol.PLAINTEXT
)


def _client(consumer: FakeConsumer) -> Client:
    client = Client(
        KafkaConfig(
            bootstrap_servers="127.0.0.1:1", security_protocol=KafkaSecurityProtocol.PLAINTEXT
        )
    )
    client._partitions = PARTITIONS
    client._reader = asyncio.create_task(client._read_results(consumer))
    return client


async def test_a_dead_reader_fails_every_waiting_future_and_says_why() -> None:
    consumer = FakeConsumer([], KafkaError("the broker said no"))
    client = _client(consumer)
    waiting = client.expect(Deposit("d-1", 5, 1, 1, "EUR"))
    with pytest.raises(InfrastructureError, match="results reader stopped: KafkaError"):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(InfrastructureError, match="the broker said no"):
        client.expect(Deposit("d-2", 5, 1, 1, "EUR"))


async def test_hostile_records_are_skipped_and_a_result_resolves_its_own_partition() -> None:
    command = Deposit("same", 5, 1, 1, "EUR")
    home = partition_of(5, PARTITIONS)
    elsewhere = (home + 1) % PARTITIONS
    real = Result("same", Status.ACCEPTED, partition=home, offset=3)
    hostile = [
        Record(home, 0, None),
        Record(home, 1, b"\x91" * 5_000 + b"\x01"),
        Record(home, 2, encode(Result("same", Status.REJECTED, partition=elsewhere))),
        Record(elsewhere, 0, encode(Result("same", Status.REJECTED, partition=elsewhere))),
    ]
    client = _client(FakeConsumer([hostile, [Record(home, 3, encode(real))]]))
    waiting = client.expect(command)
    assert await asyncio.wait_for(waiting, 5) == real
    assert client.skipped_results == 3
    client._reader.cancel()  # type: ignore[union-attr]


async def test_a_client_refuses_to_publish_a_leg() -> None:
    client = Client(
        KafkaConfig(
            bootstrap_servers="127.0.0.1:1", security_protocol=KafkaSecurityProtocol.PLAINTEXT
        )
    )
    leg = credit_leg(Transfer("t-1", 5, 1, 6, 1, 10, "EUR"), 0, 0)
    assert leg.id == credit_leg_id("t-1", 5)
    with pytest.raises(ConfigError, match="only workers publish legs"):
        await client.publish(leg)
    with pytest.raises(ConfigError, match="only workers publish legs"):
        await client.publish_many([Deposit("d", 5, 1, 1, "EUR"), leg])
