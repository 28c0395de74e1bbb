"""Ending records the broker left open (`hanging.py`) against the real broker: resealing
commits the offsets of the last commit again, never below what the group settled and only
from an empty transaction; an abort seals every output partition and the group's offsets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.pipelines import read_topic, started_transaction, write_topology
from tests.support import Services, Topics
from tidemark.config import Topology, faults, load_topology
from tidemark.processor.kafka import clients
from tidemark.processor.kafka.hanging import SEAL_HEADERS, settled_offsets
from tidemark.processor.kafka.transaction import Transaction

pytestmark = pytest.mark.integration


def joined(consumer: Consumer, topic: str, partitions: int) -> None:
    """Poll until the consumer owns every partition of `topic` (bounded)."""
    deadline = time.monotonic() + 30
    while len(consumer.assignment()) < partitions:
        assert time.monotonic() < deadline, "the consumer was not assigned within 30 s"
        consumer.poll(0.2)


@contextlib.asynccontextmanager
async def member(
    services: Services, tmp_path: Path, source: str, sink: str
) -> AsyncIterator[tuple[Topology, Any, Transaction]]:
    """A started transaction beside a consumer that owns both partitions of `source`:
    the topology, the consumer's group metadata and the transaction."""
    path = write_topology(tmp_path / "t.yaml", services, "unused", f"g-{source[-6:]}", source, sink)
    topology = load_topology(path)
    consumer = clients.consumer(topology, "test")
    consumer.subscribe([source])
    tx = Transaction(topology, "test")
    try:
        await asyncio.to_thread(joined, consumer, source, 2)
        await tx.start()
        yield topology, consumer.consumer_group_metadata(), tx
    finally:
        await tx.abort()
        consumer.close()


async def test_reseal_commits_the_last_offsets_no_lower_than_the_settled_ones(
    services: Services, make_topic: Topics, tmp_path: Path
) -> None:
    source, sink = make_topic("clicks", 2), make_topic("out", 2)
    async with member(services, tmp_path, source, sink) as (topology, metadata, tx):
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


def every_record(services: Services, topic: str, partitions: int, isolation: str) -> list[Any]:
    """Every record of `topic` that a reader at `isolation` sees, up to the end (bounded)."""
    reader = Consumer(
        {
            "bootstrap.servers": services.kafka,
            "group.id": f"reader-{time.monotonic_ns()}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = {tp.partition: reader.get_watermark_offsets(tp, 10)[1] for tp in tps}
        reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while any(max(tp.offset, 0) < ends[tp.partition] for tp in reader.position(tps)):
            assert time.monotonic() < deadline, f"{topic} not read to its end within 30 s"
            msg = reader.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append(msg)
        return records
    finally:
        reader.close()


async def test_an_abort_seals_every_output_partition_and_the_offsets_it_offered(
    services: Services, make_topic: Topics, tmp_path: Path
) -> None:
    source, sink = make_topic("clicks", 2), make_topic("out", 3)
    async with member(services, tmp_path, source, sink) as (topology, metadata, tx):
        assert await tx.send_offsets([TopicPartition(source, 0, 5)], metadata)
        assert await tx.commit()

        tx.produce(sink, b"k", b"aborted", partition=1)
        assert await tx.send_offsets([TopicPartition(source, 0, 8)], metadata)
        await tx.abort()

        seen = await asyncio.to_thread(every_record, services, sink, 3, "read_uncommitted")
        seals = sorted(m.partition() for m in seen if m.headers() == SEAL_HEADERS)
        assert seals == [0, 1, 2], f"one seal record per sink partition, got {seals}"
        visible = await asyncio.to_thread(every_record, services, sink, 3, "read_committed")
        assert visible == [], "the seal and the aborted output are invisible to read_committed"
        assert settled_offsets(topology, [TopicPartition(source, 0)]) == {0: 5}

        await tx.send_offsets([TopicPartition(source, 0, 6)], metadata)
        assert await tx.commit()  # a seal leaves a usable transaction open behind it
        assert settled_offsets(topology, [TopicPartition(source, 0)]) == {0: 6}


async def test_an_abort_after_a_refused_record_still_seals(
    services: Services, make_topic: Topics, tmp_path: Path
) -> None:
    source = make_topic("clicks", 1)
    sink = make_topic("out", 2, {"max.message.bytes": "2000"})
    async with started_transaction(services, tmp_path, source, sink) as (_, tx):
        tx.produce(sink, b"k", b"x" * 10_000, partition=0)  # the broker refuses it
        assert not await tx.commit(), "a transaction with a refused record committed"
        await tx.abort()  # bumps the producer's epoch, purging as it goes; then seals
        seen = await asyncio.to_thread(every_record, services, sink, 2, "read_uncommitted")
        # The purge can take some of a first try's records: a partition may hold two.
        assert {m.partition() for m in seen if m.headers() == SEAL_HEADERS} == {0, 1}
        tx.produce(sink, b"k", b"fits", partition=0)
        assert await tx.commit(), "no usable transaction after the seal"


async def test_a_crash_before_the_seal_leaves_nothing_visible_and_the_next_owner_commits(
    services: Services, make_topic: Topics, tmp_path: Path
) -> None:
    source, sink = make_topic("clicks", 1), make_topic("out", 1)
    path = write_topology(tmp_path / "t.yaml", services, "unused", f"g-{source[-6:]}", source, sink)
    topology = load_topology(path)
    crashed = Transaction(topology, "crashed")
    await crashed.start()
    crashed.produce(sink, b"k", b"aborted", partition=0)
    faults.arm("seal")
    try:
        with pytest.raises(faults.Crash):
            await crashed.abort()  # aborted; the process "dies" before its seal
    finally:
        faults.disarm()
    following = Transaction(topology, "following")
    await following.start()
    try:
        following.produce(sink, b"k", b"committed", partition=0)
        assert await following.commit()
    finally:
        await following.abort()
    records = await asyncio.to_thread(read_topic, services, sink, 1, 1)
    assert [m.value() for m in records] == [b"committed"]
