"""Topic checks at start: the source, sink and route topics exist, the dead-letter topic is
created."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tidemark.config import Topology
from tidemark.config.errors import TidemarkError
from tidemark.config.model import RouteStep
from tidemark.processor.kafka.clients import base


class TopologyError(TidemarkError):
    """The topology cannot start as configured (missing topic and the like)."""


def partition_counts(topology: Topology, topics: list[str]) -> dict[str, int]:
    """Partition count of each topic that exists."""
    admin = AdminClient(base(topology))
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


def route_topics(topology: Topology) -> list[str]:
    """The topics `route` steps send to."""
    steps = [s for s in topology.pipeline if isinstance(s, RouteStep)]
    return list(dict.fromkeys(t for s in steps for t in s.topics()))


def check_topics(topology: Topology) -> dict[str, int]:
    """Fail clearly if the source, sink or a route topic is missing; create the dead-letter
    topic if missing."""
    routes = route_topics(topology)
    names = [topology.source.topic, topology.dead_letter_topic, *routes]
    if topology.sink:
        names.append(topology.sink.topic)
    counts = partition_counts(topology, names)
    for role, topic in (
        ("source", topology.source.topic),
        ("sink", getattr(topology.sink, "topic", None)),
        *(("route", t) for t in routes),
    ):
        if topic is not None and topic not in counts:
            raise TopologyError(f"{role} topic {topic!r} does not exist; create it first")
    if topology.dead_letter_topic not in counts:
        admin = AdminClient(base(topology))
        new = NewTopic(topology.dead_letter_topic, counts[topology.source.topic], -1)
        try:
            admin.create_topics([new])[topology.dead_letter_topic].result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        counts[topology.dead_letter_topic] = counts[topology.source.topic]
    return counts


def sink_partitioned(topology: Topology, counts: dict[str, int]) -> bool:
    """Outputs keep their input's partition number when the sink is partitioned alike."""
    return (
        topology.sink is not None
        and counts.get(topology.sink.topic) == counts[topology.source.topic]
    )
