"""The replication init gives the topics: what fits the cluster, or what it is told."""

from __future__ import annotations

import msgspec
import pytest

from engine.core.config import KafkaConfig
from engine.core.errors import ConfigError
from engine.kafka.topics import Replication, replication_for


def kafka(factor: int = 0, min_insync: int = 0) -> KafkaConfig:
    return msgspec.structs.replace(
        KafkaConfig(), replication_factor=factor, min_insync_replicas=min_insync
    )


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [
        (1, Replication(1, 1)),
        (2, Replication(2, 1)),
        (3, Replication(3, 2)),
        (5, Replication(3, 2)),
    ],
)
def test_the_default_fits_the_cluster(brokers: int, expected: Replication) -> None:
    assert replication_for(kafka(), brokers) == expected


def test_what_it_is_told_and_what_cannot_work() -> None:
    assert replication_for(kafka(5, 3), 6) == Replication(5, 3)
    assert replication_for(kafka(2), 3) == Replication(2, 1)
    with pytest.raises(ConfigError, match="needs 3 brokers, the cluster has 1"):
        replication_for(kafka(3), 1)
    with pytest.raises(ConfigError, match="above the replication"):
        replication_for(kafka(2, 3), 3)
    with pytest.raises(ConfigError, match="must be >= 0"):
        kafka(-1)
