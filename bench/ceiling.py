"""The raw ceiling: confluent-kafka consume, orjson decode, dict aggregation, one produce each.

No durability and no transactions. Runs until it has consumed `events` records.
Usage: python bench/ceiling.py BOOTSTRAP SOURCE SINK GROUP EVENTS
"""

from __future__ import annotations

import sys

import orjson
from confluent_kafka import Consumer, Producer


def main() -> None:
    bootstrap, source, sink, group, events = sys.argv[1:6]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    )
    consumer.subscribe([source])
    state: dict[str, list[int]] = {}
    seen, target = 0, int(events)
    while seen < target:
        for msg in consumer.consume(2000, 0.5):
            if msg.error():
                continue
            value = orjson.loads(msg.value())
            key = value["user_id"]
            agg = state.get(key)
            if agg is None:
                agg = state[key] = [0, 0]
            agg[0] += 1
            agg[1] += value["amount"]
            out = orjson.dumps({"count": agg[0], "total": agg[1]})
            while True:
                try:
                    producer.produce(sink, out, key.encode(), partition=msg.partition())
                    break
                except BufferError:
                    producer.poll(0.05)
            seen += 1
        producer.poll(0)
    producer.flush(60)
    consumer.close()


if __name__ == "__main__":
    main()
