"""Kafka clients for a topology: the group member, the transactional producer, a reader."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from tidemark.config import Topology
from tidemark.processor.kafka.client_logs import routed

TRANSACTION_TIMEOUT_MS = 10_000


def base(topology: Topology) -> dict[str, Any]:
    """Settings every client shares; user options last so security.protocol, sasl.* and
    ssl.* reach librdkafka as given."""
    return {
        "bootstrap.servers": topology.kafka.bootstrap_servers,
        **routed(),
        **topology.kafka.options,
    }


def consumer(topology: Topology, owner: str) -> Consumer:
    """A group member reading only committed records, offsets committed by the producer."""
    return Consumer(
        {
            **base(topology),
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


def producer(topology: Topology, owner: str, transactional_id: str) -> Producer:
    """A transactional producer; zombies are fenced through the consumer group (KIP-447).

    The transactional id is unique per process (fencing does not rely on it being stable);
    a producer that replaces a broken one reuses it, which aborts what the old one left open.
    """
    return Producer(
        {
            **base(topology),
            "client.id": owner,
            "transactional.id": transactional_id,
            # A worker killed mid-transaction blocks read_committed readers of its outputs
            # until the broker aborts the transaction: keep that short (commits are ~1 s apart).
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            **topology.kafka.producer,
        }
    )


def transaction_timeout(topology: Topology) -> float:
    """Seconds after which the broker aborts a transaction its producer left open."""
    return (
        float(topology.kafka.producer.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)) / 1000
    )


def reader(topology: Topology) -> Consumer:
    """A consumer that never joins the group: watermarks, committed offsets, offsets for
    times, and the replay's reads of one partition."""
    return Consumer(
        {
            **base(topology),
            "group.id": topology.name,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **topology.kafka.consumer,
        }
    )
