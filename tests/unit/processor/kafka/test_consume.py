"""The consumed batch's split by partition, in C (`processor/kafka/_consume.c`)."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from tidemark.processor.kafka import _consume
from tidemark.processor.runtime.batch import by_partition


def _message(partition: int | None, offset: int | None, error: KafkaError | None = None) -> Message:
    """A message as consumed; -1 and -1001 are librdkafka's "no partition" and "no offset"."""
    at = {
        "partition": -1 if partition is None else partition,
        "offset": -1001 if offset is None else offset,
    }
    return Message(**at, error=error, value=b"{}")


def test_messages_are_grouped_by_partition_in_order() -> None:
    messages = [_message(1, 10), _message(0, 5), _message(1, 11), _message(0, 6)]
    batches = by_partition(messages)
    assert {n: [m.offset() for m in b] for n, b in batches.items()} == {1: [10, 11], 0: [5, 6]}


def test_offsets_at_or_past_the_end_are_left_out() -> None:
    batches = by_partition([_message(0, 4), _message(0, 5), _message(0, 6)], end=5)
    assert [m.offset() for m in batches[0]] == [4]
    assert by_partition([_message(0, 4)], end=2**70)[0][0].offset() == 4  # past 64 bits


def test_messages_with_an_error_or_no_position_are_set_apart() -> None:
    errored = _message(0, 7, KafkaError(KafkaError._PARTITION_EOF))
    messages = [errored, _message(None, 1), _message(0, None), _message(0, 8)]
    batches, failed = _consume.split(messages, None)
    assert failed == messages[:3]
    assert [m.offset() for m in batches[0]] == [8]
