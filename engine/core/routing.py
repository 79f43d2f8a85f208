"""Routing: which partition a customer lives in.

The key of every command record is the customer id in decimal ASCII (``b"42"``), so
any Kafka producer in any language that sets that key lands the command where the
worker expects it: Kafka's default partitioner, murmur2 over the key bytes, positive,
modulo the partition count. This module is that function, bit for bit.
"""

from __future__ import annotations

import functools
from typing import Final

from engine.core.errors import invariant

ROUTING_CACHE_MAX: Final = 1 << 20
"""Most customers whose partition is remembered (the hot path asks for it per command)."""

_MASK: Final = 0xFFFFFFFF
_M: Final = 0x5BD1E995
_SEED: Final = 0x9747B28C


def customer_key(customer: int) -> bytes:
    """The record key of a customer's commands (decimal ASCII)."""
    return str(customer).encode("ascii")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (as in its Java client's Utils.murmur2), as an unsigned 32-bit int.

    Not aiokafka's own: the core imports no Kafka library (unit-tested against it)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length - length % 4
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_of_key(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@functools.lru_cache(maxsize=ROUTING_CACHE_MAX)
def partition_of(customer: int, partitions: int) -> int:
    """The partition that owns ``customer``'s accounts."""
    return partition_of_key(customer_key(customer), partitions)


ROUTING_SEARCH_MAX: Final = 1_000_000
"""Most customer ids tried to find one in every partition (64 partitions need 290, 4,096
need 38,935)."""


def routing_customers(partitions: int) -> tuple[int, ...]:
    """The smallest customer id >= 1 of each partition (element p: partition p's): the
    address of a command about a partition rather than a customer
    (``close_business_day``). Computed without ``partition_of``'s cache."""
    invariant(partitions >= 1, f"{partitions} partitions")
    found: dict[int, int] = {}
    customer = 0
    while len(found) < partitions:
        customer += 1
        invariant(customer <= ROUTING_SEARCH_MAX, f"no customer routes to some of {partitions}")
        found.setdefault(partition_of_key(customer_key(customer), partitions), customer)
    return tuple(found[partition] for partition in range(partitions))
