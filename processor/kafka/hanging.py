"""Sealing a commit of ours that the broker completed without writing its markers.

Kafka's transaction coordinator skips the markers of a partition that has no leader, taking
it for deleted (KAFKA-5202). A one-broker cluster's controlled shutdown leaves every
partition leaderless while the coordinator still answers, so a commit in that window is
acknowledged, recorded as complete, and its markers are never written: its outputs stay
invisible to `read_committed` readers and its consumer offsets stay pending, so the group's
committed offsets never settle and no member can recover (`consumer.committed` times out).

Only the producer that wrote them can end them: a marker closes every open record of its
producer id in a partition. This process's transactional id (and so its producer id) lives
as long as it does, and it knows the offsets of its last commit: the last one the broker
acknowledged, or a later one whose call failed without saying whether the broker took it
(a commit timed out as the broker went down). Committing them again, no lower than
what the group already settled, writes the marker that settles the offsets; the outputs are
sealed by the next commit that writes to their partition (the sink partitions of a running
topology get records every batch). Resealing the older offsets instead would settle the
group behind outputs that the same markers make visible: they would be produced twice.

It is safe only once no transaction can still be open legitimately: the caller waits for
offsets to settle for longer than the broker needs to abort any open transaction.
"""

from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tidemark.config import Topology
from tidemark.processor.kafka.clients import base


def unsettled(exc: KafkaException) -> bool:
    """Whether reading committed offsets failed because they did not settle in time."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError._TIMED_OUT


def settled_offsets(topology: Topology, partitions: list[TopicPartition]) -> dict[int, int]:
    """The group's committed offsets as settled so far, pending ones left out (blocking)."""
    admin = AdminClient(base(topology))
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    request = ConsumerGroupTopicPartitions(topology.name, wanted)
    futures = admin.list_consumer_group_offsets([request], require_stable=False)
    found = futures[topology.name].result(timeout=30).topic_partitions or []
    return {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}


def resealed(last: list[TopicPartition], settled: dict[int, int]) -> list[TopicPartition]:
    """Offsets that settle `last` without moving any partition back."""
    return [
        TopicPartition(tp.topic, tp.partition, max(tp.offset, settled.get(tp.partition, -1)))
        for tp in last
    ]
