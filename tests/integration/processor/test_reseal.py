"""Resealing the last commit (`hanging.py`) against the real broker: it commits the offsets
of the last commit again, never below what the group settled, and only from an empty
transaction."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.pipelines import write_topology
from tests.support import Services, Topics
from tidemark.config import load_topology
from tidemark.processor.kafka import clients
from tidemark.processor.kafka.hanging import settled_offsets
from tidemark.processor.kafka.transaction import Transaction

pytestmark = pytest.mark.integration


def joined(consumer: Consumer, topic: str, partitions: int) -> None:
    """Poll until the consumer owns every partition of `topic` (bounded)."""
    deadline = time.monotonic() + 30
    while len(consumer.assignment()) < partitions:
        assert time.monotonic() < deadline, "the consumer was not assigned within 30 s"
        consumer.poll(0.2)


async def test_reseal_commits_the_last_offsets_no_lower_than_the_settled_ones(
    services: Services, make_topic: Topics, tmp_path: Path
) -> None:
    source, sink = make_topic("clicks", 2), make_topic("out", 2)
    path = write_topology(tmp_path / "t.yaml", services, "unused", f"g-{source[-6:]}", source, sink)
    topology = load_topology(path)
    consumer = clients.consumer(topology, "test")
    consumer.subscribe([source])
    tx = Transaction(topology, "test")
    try:
        await asyncio.to_thread(joined, consumer, source, 2)
        metadata: Any = consumer.consumer_group_metadata()
        await tx.start()
        assert not await tx.reseal({}, metadata), "nothing committed yet: nothing to reseal"

        last = [TopicPartition(source, 0, 5), TopicPartition(source, 1, 9)]
        assert await tx.send_offsets(last, metadata) and await tx.commit()
        assert [(tp.partition, tp.offset) for tp in tx.last_offsets] == [(0, 5), (1, 9)]
        assert settled_offsets(topology, tx.last_offsets) == {0: 5, 1: 9}

        tx.produce(sink, b"k", b"v", partition=0)
        assert not await tx.reseal({0: 7}, metadata), "resealed over an open transaction"
        await tx.abort()

        assert await tx.reseal({0: 7}, metadata)
        assert settled_offsets(topology, tx.last_offsets) == {0: 7, 1: 9}
        committed = await asyncio.to_thread(
            consumer.committed, [TopicPartition(source, 0), TopicPartition(source, 1)], 10
        )
        assert [tp.offset for tp in committed] == [7, 9]
    finally:
        await tx.abort()
        consumer.close()
