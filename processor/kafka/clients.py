"""Kafka clients for a topology: configuration, topic checks, dead-letter topic creation."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tidemark.config import Topology

TRANSACTION_TIMEOUT_MS = 10_000


class TopologyError(Exception):
    """The topology cannot start as configured (missing topic and the like)."""


def _base(topology: Topology) -> dict[str, Any]:
    # User options come last so security.protocol, sasl.* and ssl.* reach librdkafka as given.
    return {"bootstrap.servers": topology.kafka.bootstrap_servers, **topology.kafka.options}


def consumer(topology: Topology, owner: str) -> Consumer:
    """A group member reading only committed records, offsets committed by the producer."""
    return Consumer(
        {
            **_base(topology),
            "group.id": topology.name,
            "client.id": owner,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": topology.source.start,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": 100,
            "enable.partition.eof": False,
            **topology.kafka.consumer,
        }
    )


def producer(topology: Topology, owner: str) -> Producer:
    """A transactional producer; zombies are fenced through the consumer group (KIP-447).

    The transactional id is unique per process: fencing does not rely on it being stable.
    """
    return Producer(
        {
            **_base(topology),
            "client.id": owner,
            "transactional.id": f"tidemark-{topology.name}-{uuid.uuid4().hex[:12]}",
            # A worker killed mid-transaction blocks read_committed readers of its outputs
            # until the broker aborts the transaction: keep that short (commits are ~1 s apart).
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            **topology.kafka.producer,
        }
    )


def partition_counts(topology: Topology, topics: list[str]) -> dict[str, int]:
    """Partition count of each topic that exists."""
    admin = AdminClient(_base(topology))
    try:
        metadata = admin.list_topics(timeout=15)
    except KafkaException as exc:
        raise TopologyError(
            f"cannot reach Kafka at {topology.kafka.bootstrap_servers}: {exc}"
        ) from exc
    return {
        t: len(metadata.topics[t].partitions)
        for t in topics
        if t in metadata.topics and metadata.topics[t].error is None
    }


def check_topics(topology: Topology) -> dict[str, int]:
    """Fail clearly if the source or sink is missing; create the dead-letter topic if missing."""
    names = [topology.source.topic, topology.dead_letter_topic]
    if topology.sink:
        names.append(topology.sink.topic)
    counts = partition_counts(topology, names)
    for role, topic in (
        ("source", topology.source.topic),
        ("sink", getattr(topology.sink, "topic", None)),
    ):
        if topic is not None and topic not in counts:
            raise TopologyError(f"{role} topic {topic!r} does not exist; create it first")
    if topology.dead_letter_topic not in counts:
        admin = AdminClient(_base(topology))
        new = NewTopic(topology.dead_letter_topic, counts[topology.source.topic], -1)
        try:
            admin.create_topics([new])[topology.dead_letter_topic].result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        counts[topology.dead_letter_topic] = counts[topology.source.topic]
    return counts


def offsets_reader(topology: Topology) -> Consumer:
    """A consumer that only looks: watermarks, committed offsets and offsets for times.

    It carries the group id to read the group's committed offsets but never subscribes,
    so it does not join the group.
    """
    return Consumer(
        {
            **_base(topology),
            "group.id": topology.name,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **topology.kafka.consumer,
        }
    )


@dataclass(frozen=True)
class Positions:
    """Where one source partition stands in Kafka."""

    low: int
    high: int
    committed: int | None  # the group's committed offset, None if it never committed
    at_time: int | None = None  # first offset at or after the time asked for


def source_positions(
    topology: Topology, partitions: list[int], at: dt.datetime | None = None
) -> dict[int, Positions]:
    """Watermarks and committed offsets of source partitions (blocking; read only)."""
    reader = offsets_reader(topology)
    topic = topology.source.topic
    try:
        committed = reader.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        found = {}
        for tp in committed:
            low, high = reader.get_watermark_offsets(tp, timeout=15)
            at_time = None
            if at is not None:
                wanted = TopicPartition(topic, tp.partition, int(at.timestamp() * 1000))
                offset = reader.offsets_for_times([wanted], timeout=15)[0].offset
                at_time = offset if offset >= 0 else high
            found[tp.partition] = Positions(
                low, high, tp.offset if tp.offset >= 0 else None, at_time
            )
        return found
    finally:
        reader.close()
