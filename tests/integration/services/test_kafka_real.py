"""The local broker is a real Kafka: transactions and consumer-group rebalances work."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.support import Services, TopicFactory, wait_until

pytestmark = pytest.mark.integration


def consumer(services: Services, group: str, **extra: object) -> Consumer:
    conf: dict[str, object] = {
        "bootstrap.servers": services.kafka,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        **extra,
    }
    return Consumer(conf)


def test_read_committed_sees_only_committed_transactions(
    services: Services, make_topic: TopicFactory
) -> None:
    topic = make_topic("txn")
    producer = Producer(
        {"bootstrap.servers": services.kafka, "transactional.id": f"smoke-{uuid.uuid4()}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(10)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"last")
    producer.commit_transaction(30)

    reader = consumer(services, f"g-{uuid.uuid4()}", **{"isolation.level": "read_committed"})
    reader.assign([TopicPartition(topic, 0, 0)])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        msg = reader.poll(0.5)
        if msg is not None and msg.error() is None:
            seen.append(msg.value())
    # Past the last committed record there is nothing more to read.
    extra = reader.poll(1.0)
    reader.close()
    assert seen == [b"committed", b"last"]
    assert extra is None or extra.error() is not None


def test_group_splits_partitions_and_rebalances_when_a_member_leaves(
    services: Services, make_topic: TopicFactory
) -> None:
    topic = make_topic("group", partitions=4)
    group = f"g-{uuid.uuid4()}"
    a, b = consumer(services, group), consumer(services, group)
    a.subscribe([topic])
    b.subscribe([topic])

    def owned(c: Consumer) -> set[int]:
        c.poll(0.2)
        return {tp.partition for tp in c.assignment()}

    def split() -> bool:
        # Poll both every time: a member that is not polled cannot finish joining.
        mine, theirs = owned(a), owned(b)
        return len(mine) == 2 and len(theirs) == 2

    wait_until(split, 60, "both members owning 2 partitions")
    assert owned(a) | owned(b) == {0, 1, 2, 3}
    assert not owned(a) & owned(b)

    b.close()
    wait_until(lambda: owned(a) == {0, 1, 2, 3}, 60, "the remaining member owning all partitions")
    a.close()
