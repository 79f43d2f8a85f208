"""The routing function must agree with Kafka's default partitioner, bit for bit."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from engine.core.routing import customer_key, murmur2, partition_of, partition_of_key

# Values of the Java client's Utils.murmur2 (as published in Kafka's own unit tests).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_the_java_client() -> None:
    for data, expected in JAVA_VECTORS.items():
        assert murmur2(data) == expected & 0xFFFFFFFF, data


@given(st.binary(max_size=64))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data) & 0xFFFFFFFF


@given(st.integers(min_value=1, max_value=2**63 - 1), st.integers(min_value=1, max_value=4096))
def test_partition_is_in_range_and_keyed_by_decimal_customer(
    customer: int, partitions: int
) -> None:
    partition = partition_of(customer, partitions)
    assert 0 <= partition < partitions
    assert partition == partition_of_key(str(customer).encode(), partitions)
    assert customer_key(customer) == str(customer).encode()
