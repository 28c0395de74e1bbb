"""Topic checks at start: the source, sink, route and table topics exist, tables are
partitioned like the source, the dead-letter topic is created."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
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


def output_topics(topology: Topology) -> list[str]:
    """The topics a worker produces to: the sink, the route topics and the dead letters."""
    sink = [topology.sink_topic] if topology.sink_topic else []
    return list(dict.fromkeys([*sink, *route_topics(topology), topology.dead_letter_topic]))


# How far a record's timestamp may lie from the broker's clock, before and after it, when
# the topic does not say (Kafka 4's defaults): a record outside is refused, and with it the
# transaction that holds it.
TIMESTAMP_LIMITS_MS = (2**63 - 1, 3_600_000)


def timestamp_limits(topology: Topology, topics: list[str]) -> dict[str, tuple[int, int]]:
    """Each topic's (before, after) limits on record timestamps, in ms (blocking); a topic
    that stamps its records on append has none, one whose settings are unreadable the
    defaults."""
    if not topics:
        return {}
    admin = AdminClient(base(topology))
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    found = {}
    for resource, future in admin.describe_configs(resources).items():
        try:
            config = future.result(timeout=15)
        except Exception:  # noqa: BLE001 - unreadable: assume the defaults
            continue
        settings = {name: entry.value for name, entry in config.items()}
        if settings.get("message.timestamp.type") == "LogAppendTime":
            found[resource.name] = (2**63 - 1, 2**63 - 1)
            continue
        before = settings.get("message.timestamp.before.max.ms")
        after = settings.get("message.timestamp.after.max.ms")
        found[resource.name] = (
            int(before) if before else TIMESTAMP_LIMITS_MS[0],
            int(after) if after else TIMESTAMP_LIMITS_MS[1],
        )
    return found


def check_topics(topology: Topology) -> dict[str, int]:
    """Fail clearly if the source, sink or a route topic is missing; create the dead-letter
    topic if missing."""
    routes = route_topics(topology)
    tables = [t.topic for t in topology.tables.values()]
    names = [topology.source.topic, topology.dead_letter_topic, *routes, *tables]
    if topology.sink_topic:
        names.append(topology.sink_topic)
    counts = partition_counts(topology, names)
    for role, topic in (
        ("source", topology.source.topic),
        ("sink", topology.sink_topic),
        *(("route", t) for t in routes),
    ):
        if topic is not None and topic not in counts:
            raise TopologyError(f"{role} topic {topic!r} does not exist; create it first")
    _check_tables(topology, counts)
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


def _check_tables(topology: Topology, counts: dict[str, int]) -> None:
    """A join finds a stream record's row only if the table has the source's partition
    count (and is keyed alike, which the join checks per record)."""
    source = topology.source.topic
    for name, table in topology.tables.items():
        if table.topic not in counts:
            raise TopologyError(f"table {name!r}: topic {table.topic!r} does not exist")
        if counts[table.topic] != counts[source]:
            raise TopologyError(
                f"table {name!r} is not co-partitioned with the source: topic "
                f"{table.topic!r} has {counts[table.topic]} partitions, {source!r} has "
                f"{counts[source]}; a join needs the same count, keyed alike"
            )


def sink_partitioned(topology: Topology, counts: dict[str, int]) -> bool:
    """Outputs keep their input's partition number when the sink is partitioned alike."""
    return (
        topology.sink_topic is not None
        and counts.get(topology.sink_topic) == counts[topology.source.topic]
    )
