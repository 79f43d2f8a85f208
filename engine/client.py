"""The asyncio client for upstream apps: publish commands, await their results.

    async with Client(KafkaConfig()) as client:
        result = await client.submit(Deposit(id="dep-1", customer=42, account=1,
                                             amount=1_000, currency="EUR"))
        await client.publish(command)          # fire and forget (broker-acknowledged)

The record key is the customer id (engine.routing), so the command lands in the
partition that owns the customer. Results are read from ``<prefix>.results`` from the
moment the client starts; a result seen twice (the relay re-sent it) resolves once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final, Self

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from engine.config import KafkaConfig
from engine.errors import ConfigError, InfrastructureError
from engine.messages import Command, Result, encode, result_decoder
from engine.routing import customer_key, partition_of

log = logging.getLogger(__name__)

WAITING_MAX: Final = 1_000_000
"""Most results one client awaits at once; submit() refuses more."""


class Client:
    def __init__(
        self,
        kafka: KafkaConfig,
        *,
        linger_ms: int = 5,
        client_id: str = "smallcups",
        on_result: Callable[[Result], None] | None = None,
    ):
        self.kafka = kafka
        self.on_result = on_result
        """Called with every result read (load generators keep their own books)."""
        self._partitions = 0
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            client_id=client_id,
            request_timeout_ms=kafka.request_timeout_ms,
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[Result]] = {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self, *, results: bool = True) -> None:
        """Connect the producer, and the results reader unless ``results`` is false."""
        await self._producer.start()
        partitions = await self._producer.partitions_for(self.kafka.commands_topic)
        if not partitions:
            raise ConfigError(
                f"topic {self.kafka.commands_topic} does not exist: run smallcups init"
            )
        self._partitions = len(partitions)
        if results:
            await self._start_reader()

    async def _start_reader(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers,
            enable_auto_commit=False,
            request_timeout_ms=self.kafka.request_timeout_ms,
        )
        await consumer.start()
        try:
            partitions = await self._producer.partitions_for(self.kafka.results_topic)
        except KafkaError:
            partitions = None
        if not partitions:
            await consumer.stop()
            raise ConfigError(
                f"topic {self.kafka.results_topic} does not exist: run smallcups init"
            )
        tps = [TopicPartition(self.kafka.results_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        self._consumer = consumer
        self._reader = asyncio.create_task(self._read_results(consumer))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await self._consumer.stop()
        await self._producer.stop()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(InfrastructureError("client closed before the result"))
        self._waiting.clear()

    async def publish(self, command: Command) -> asyncio.Future[object]:
        """Queue a command; the returned future resolves when the broker has it."""
        return await self._producer.send(  # type: ignore[no-any-return]
            self.kafka.commands_topic, encode(command), key=customer_key(command.customer)
        )

    async def publish_many(self, commands: Sequence[Command]) -> list[asyncio.Future[object]]:
        """Queue many commands packed in one record batch per partition (the load path).

        The partition is the one Kafka's default partitioner picks for the key, so the
        commands land exactly where ``publish`` would put them.
        """
        topic = self.kafka.commands_topic
        groups: dict[int, list[Command]] = {}
        for command in commands:
            groups.setdefault(partition_of(command.customer, self._partitions), []).append(command)
        futures: list[asyncio.Future[object]] = []
        for partition, group in groups.items():
            batch = self._producer.create_batch()
            for command in group:
                key, value = customer_key(command.customer), encode(command)
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(
                        await self._producer.send_batch(batch, topic, partition=partition)
                    )
                    batch = self._producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        return futures

    async def submit(self, command: Command, timeout_seconds: float = 30.0) -> Result:
        """Publish a command and wait for its result."""
        future = self.expect(command.id)
        try:
            await (await self.publish(command))
            return await asyncio.wait_for(asyncio.shield(future), timeout_seconds)
        finally:
            if self._waiting.get(command.id) is future:
                del self._waiting[command.id]

    def expect(self, command_id: str) -> asyncio.Future[Result]:
        """A future for the result of ``command_id`` (register before publishing)."""
        if self._reader is None:
            raise ConfigError("the client was started without its results reader")
        future = self._waiting.get(command_id)
        if future is None:
            if len(self._waiting) >= WAITING_MAX:
                raise ConfigError(f"more than {WAITING_MAX} results awaited at once")
            future = self._waiting[command_id] = asyncio.get_running_loop().create_future()
        return future

    def forget(self, command_id: str) -> None:
        self._waiting.pop(command_id, None)

    async def _read_results(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in fetched.values():
                for record in records:
                    try:
                        result = result_decoder.decode(record.value)
                    except msgspec.DecodeError:
                        log.warning("undecodable result at offset %d", record.offset)
                        continue
                    if self.on_result is not None:
                        self.on_result(result)
                    future = self._waiting.pop(result.command_id, None)
                    if future is not None and not future.done():
                        future.set_result(result)
