"""Where source partitions stand in Kafka: watermarks, committed offsets, offsets for times.

One reader of positions for the worker (its own consumer, inside a rebalance callback),
the replay and `status` (a reader that never joins the group).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from tidemark.config import Topology
from tidemark.processor.kafka.clients import reader


@dataclass(frozen=True)
class Positions:
    """Where one source partition stands in Kafka."""

    low: int
    high: int
    committed: int | None  # C: the group's committed offset, None if it never committed
    at_time: int | None = None  # first offset at or after the time asked for

    def first_start(self, start: str) -> int:
        """Where a partition's first owner ever starts (`source.start`)."""
        return self.low if start == "earliest" else self.high


def read_positions(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    settle: float = 30,
    at: dt.datetime | None = None,
) -> dict[int, Positions]:
    """Positions of these partitions (blocking; the committed offsets wait up to `settle`
    seconds for pending transactional commits to settle)."""
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], settle)
    found = {}
    for tp in committed:
        low, high = consumer.get_watermark_offsets(tp, timeout=30)
        at_time = None
        if at is not None:
            wanted = TopicPartition(topic, tp.partition, int(at.timestamp() * 1000))
            offset = consumer.offsets_for_times([wanted], timeout=30)[0].offset
            at_time = offset if offset >= 0 else high
        found[tp.partition] = Positions(low, high, tp.offset if tp.offset >= 0 else None, at_time)
    return found


def source_positions(
    topology: Topology, partitions: list[int], at: dt.datetime | None = None
) -> dict[int, Positions]:
    """`read_positions` through a reader of its own (blocking; read only)."""
    consumer = reader(topology)
    try:
        return read_positions(consumer, topology.source.topic, partitions, at=at)
    finally:
        consumer.close()
