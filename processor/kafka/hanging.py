"""Records of ours the broker left open: transactions it ended without writing markers.

Kafka's transaction coordinator skips the markers of a partition that has no leader, taking
it for deleted (KAFKA-5202). A one-broker cluster's controlled shutdown leaves every
partition leaderless while the coordinator still answers, so a transaction ended in that
window is recorded as complete, committed or aborted, and its records stay open: invisible
to `read_committed` readers, its consumer offsets pending, and the partitions' last stable
offset stuck behind them.

Only the producer that wrote them can end them: the next marker of its producer id in a
partition ends every open record of that id there, with the marker's outcome. Two cases:

- An aborted transaction, or one whose commit failed without saying whether the broker
  took it. Left alone, its open records would be committed by our next commit to their
  partition: outputs of records that are processed again, so produced twice. The producer
  seals them first (`Transaction._seal`): a transaction that writes one `SEAL_HEADERS`
  record to every output partition and offers consumer offsets to the group, then aborts.
  Where the ended transaction's markers were written, the seal's abort changes nothing;
  where they went missing, it aborts its outputs and its pending offsets together, and the
  group resumes from the last commit that was acknowledged.
- A commit the broker acknowledged. Nothing may undo it (state checkpoints and feature rows
  follow it), so a seal is skipped while its offsets are pending. A member waits for them
  to settle only as long as an open transaction can last; then this process commits those
  offsets again (`resealed`), no lower than what the group settled. That marker settles
  the offsets; the outputs are committed by the next commit that writes to their partition.

This process's transactional id, and so its producer id, lives as long as it does: records
left open by a process that died are not ours to end.
"""

from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tidemark.config import Topology
from tidemark.processor.kafka.clients import base

# Marks the records of a seal; each is in an aborted transaction, unseen by `read_committed`.
SEAL_HEADERS: list[tuple[str, str | bytes | None]] = [("tidemark-seal", b"1")]


def unsettled(exc: KafkaException) -> bool:
    """Whether reading committed offsets failed because they did not settle in time."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError._TIMED_OUT


# A seal asks this while a broker may be restarting: an answer that does not come within
# this fails the try, and the outage loop asks again (the default would wait a minute).
OFFSETS_TIMEOUT = 5.0


def settled_offsets(topology: Topology, partitions: list[TopicPartition]) -> dict[int, int]:
    """The group's committed offsets as settled so far, pending ones left out (blocking)."""
    admin = AdminClient(base(topology))
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    request = ConsumerGroupTopicPartitions(topology.name, wanted)
    futures = admin.list_consumer_group_offsets(
        [request], require_stable=False, request_timeout=OFFSETS_TIMEOUT
    )
    found = futures[topology.name].result(timeout=OFFSETS_TIMEOUT + 1).topic_partitions or []
    return {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}


def resealed(last: list[TopicPartition], settled: dict[int, int]) -> list[TopicPartition]:
    """Offsets that settle `last` without moving any partition back."""
    return [
        TopicPartition(tp.topic, tp.partition, max(tp.offset, settled.get(tp.partition, -1)))
        for tp in last
    ]
