"""The asyncio client for upstream apps: publish commands, await their results.

    async with Client(KafkaConfig()) as client:
        result = await client.submit(Deposit(id="dep-1", customer=42, account=1,
                                             amount=1_000, currency="EUR"))
        await client.publish(command)          # fire and forget (broker-acknowledged)

The record key is the customer id (engine.core.routing), so the command lands in the
partition that owns the customer. Results are read from ``<prefix>.results`` from the
moment the client starts; a result seen twice (the relay re-sent it) resolves once.

Anyone who can write the results topic can write anything there, so the reader trusts
nothing: a result resolves the command whose partition and id it names only when it
was read from that partition (two customers' commands may share an id), and a record
that is not a well-formed result (a tombstone, random bytes, nesting past any limit) is
skipped and counted (``skipped_results``). If the reader stops anyway, every waiting
future fails with an error that says why, and so does every later ``submit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from engine.core.config import KafkaConfig
from engine.core.decoding import decode_result
from engine.core.errors import ConfigError, InfrastructureError
from engine.core.messages import (
    LEG_TYPES,
    PRIVILEGED_TYPES,
    Command,
    Result,
    Undecodable,
    encode,
    issued,
)
from engine.core.routing import customer_key, partition_of
from engine.kafka.connection import connection

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


WAITING_MAX: Final = 1_000_000
"""Most results one client awaits at once; submit() refuses more."""
SKIPS_LOGGED_MAX: Final = 20
"""Skipped result records logged one by one; past that, only counted."""
ERROR_LENGTH_MAX: Final = 300
STAMPS_MAX: Final = 200_000
"""Issue times a client remembers (by customer and command id) for commands it stamped:
a re-send through the same client of a command sent without one gets the first time."""


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
            **connection(kafka),
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            client_id=client_id,
            request_timeout_ms=kafka.request_timeout_ms,
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reader_error: InfrastructureError | None = None
        self._waiting: dict[tuple[int, str], asyncio.Future[Result]] = {}
        self._stamps: dict[tuple[int, str], int] = {}
        """The issue time given to each command id stamped here (the oldest forgotten
        first, past STAMPS_MAX)."""
        self.skipped_results = 0
        """Records of the results topic that were not well-formed results, or not from
        the partition they name."""

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
        self._partitions = await self._partition_count()
        if results:
            await self._start_reader()

    @property
    def partitions(self) -> int:
        """The deployment's partition count (0 before ``start``)."""
        return self._partitions

    async def _partition_count(self) -> int:
        """The deployment's partition count, from the results topic: every role that
        publishes reads it (the risk authority may not describe the commands topic), and
        it has the commands topic's partitions (a result goes to its command's)."""
        try:
            partitions = await self._producer.partitions_for(self.kafka.results_topic)
        except KafkaError:
            partitions = None
        if not partitions:
            raise ConfigError(
                f"topic {self.kafka.results_topic} does not exist or may not be read:"
                " run smallcups init"
            )
        return len(partitions)

    async def _start_reader(self) -> None:
        consumer = AIOKafkaConsumer(
            **connection(self.kafka),
            enable_auto_commit=False,
            request_timeout_ms=self.kafka.request_timeout_ms,
        )
        await consumer.start()
        tps = [TopicPartition(self.kafka.results_topic, p) for p in range(self._partitions)]
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
        """Queue a command; the returned future resolves when the broker has it.

        A command that names no ``issued_at_ms`` is stamped with the time it was first sent
        through this client (the last STAMPS_MAX ids are remembered): a re-send through
        another client, or much later, must carry the first stamp (messages.issued).

        A privileged command goes to the internal topic, which only the risk authority's
        user may write (anyone else's publish fails with Kafka's authorization error)."""
        _refuse_legs([command])
        value = encode(self._issued(command, now_ms()))
        return await self._producer.send(  # type: ignore[no-any-return]
            self._topic_of(command), value, key=customer_key(command.customer)
        )

    def _issued(self, command: Command, now_ms: int) -> Command:
        """``command`` with its issue time: its own, or the one this client gave its id
        before, or ``now_ms`` (messages.issued)."""
        if command.issued_at_ms:
            return command
        key = (command.customer, command.id)
        issued_at_ms = self._stamps.get(key)
        if issued_at_ms is None:
            if len(self._stamps) >= STAMPS_MAX:
                del self._stamps[next(iter(self._stamps))]
            issued_at_ms = self._stamps[key] = now_ms
        return issued(command, issued_at_ms)

    def _topic_of(self, command: Command) -> str:
        if isinstance(command, PRIVILEGED_TYPES):
            return self.kafka.internal_topic
        return self.kafka.commands_topic

    async def publish_many(
        self,
        commands: Sequence[Command],
        partition_for: Callable[[Command, int], int] | None = None,
    ) -> list[asyncio.Future[object]]:
        """Queue many commands packed in one record batch per partition (the load path).

        The partition is the one Kafka's default partitioner picks for the key, so the
        commands land exactly where ``publish`` would put them; ``partition_for``
        (command, partition count) -> partition puts them elsewhere, as a producer with
        another partitioner would (the workers forward them).
        """
        _refuse_legs(commands)
        groups: dict[tuple[str, int], list[Command]] = {}
        for command in commands:
            partition = (
                partition_of(command.customer, self._partitions)
                if partition_for is None
                else partition_for(command, self._partitions)
            )
            groups.setdefault((self._topic_of(command), partition), []).append(command)
        futures: list[asyncio.Future[object]] = []
        issued_at_ms = now_ms()
        for (topic, partition), group in groups.items():
            batch = self._producer.create_batch()
            for command in group:
                key = customer_key(command.customer)
                value = encode(self._issued(command, issued_at_ms))
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
        future = self.expect(command)
        try:
            await (await self.publish(command))
            return await asyncio.wait_for(asyncio.shield(future), timeout_seconds)
        finally:
            self.forget(command, future)

    def expect(self, command: Command) -> asyncio.Future[Result]:
        """A future for the result of ``command`` (register before publishing)."""
        if self._reader is None:
            raise ConfigError("the client was started without its results reader")
        if self._reader_error is not None:
            raise self._reader_error
        key = (partition_of(command.customer, self._partitions), command.id)
        future = self._waiting.get(key)
        if future is None:
            if len(self._waiting) >= WAITING_MAX:
                raise ConfigError(f"more than {WAITING_MAX} results awaited at once")
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
        return future

    def forget(self, command: Command, future: asyncio.Future[Result] | None = None) -> None:
        """Stop awaiting ``command``'s result (only ``future``'s, when given)."""
        key = (partition_of(command.customer, self._partitions), command.id)
        if future is None or self._waiting.get(key) is future:
            self._waiting.pop(key, None)

    async def _read_results(self, consumer: AIOKafkaConsumer) -> None:
        """Resolve the futures of the results read, until cancelled; if anything stops
        the reader, fail every waiting future with the reason."""
        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=200, max_records=10_000)
                for records in fetched.values():
                    for record in records:
                        self._take(record)
        except Exception as error:
            reason = f"the results reader stopped: {type(error).__name__}: {error}"
            log.error("%s", reason)
            self._reader_error = InfrastructureError(reason[:ERROR_LENGTH_MAX])
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(self._reader_error)
            self._waiting.clear()

    def _take(self, record: Any) -> None:
        result = decode_result(record.value)
        if isinstance(result, Undecodable) or result.partition != record.partition:
            self.skipped_results += 1
            if self.skipped_results <= SKIPS_LOGGED_MAX:
                why = result.detail if isinstance(result, Undecodable) else "partition differs"
                log.warning(
                    "skipped results record %d/%d: %s", record.partition, record.offset, why
                )
            return
        if self.on_result is not None:
            self.on_result(result)
        future = self._waiting.pop((record.partition, result.command_id), None)
        if future is not None and not future.done():
            future.set_result(result)


def _refuse_legs(commands: Sequence[Command]) -> None:
    """Saga legs are made by workers only (a client's would be dead-lettered as forged)."""
    for command in commands:
        if isinstance(command, LEG_TYPES):
            raise ConfigError(f"{command.id[:80]!r} is a saga leg: only workers publish legs")
