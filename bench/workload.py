"""The benchmark workload: JSON clicks of about 200 bytes, Zipf-skewed keys, and the truth."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from itertools import accumulate

import orjson
from confluent_kafka import Producer


@dataclass
class Truth:
    """Final count and sum per key, to check every contender's last outputs against."""

    totals: dict[str, list[int]] = field(default_factory=dict)

    def add(self, key: str, amount: int) -> None:
        entry = self.totals.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += amount


# Events per second of event time (the Kafka record timestamps): 1,000,000 events span 10 s.
RATE = 100_000
WINDOW_MS = 10_000  # the tumbling contender's window


def produce_workload(
    bootstrap: str, topic: str, events: int, keys: int, seed: int = 42, skew: float = 1.0
) -> Truth:
    """Produce `events` clicks over `keys` keys (Zipf exponent `skew`), keyed by user.

    The record timestamps are set, not the producer's clock: `RATE` a second from 5 s into
    a 10 s window, a minute ago. So the tumbling contender closes the same windows in every
    run (one, at 1,000,000 events); with the clock it closed one or none, as the produce
    happened to cross a window's end, and ran 5x slower when it did."""
    rng = random.Random(seed)
    t0 = (int(time.time() * 1000) // WINDOW_MS - 6) * WINDOW_MS + WINDOW_MS // 2
    names = [f"user-{i:07d}" for i in range(keys)]
    weights = list(accumulate(1.0 / (rank**skew) for rank in range(1, keys + 1)))
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    truth = Truth()
    chunk = 10_000
    for start in range(0, events, chunk):
        users = rng.choices(names, cum_weights=weights, k=min(chunk, events - start))
        for i, user in enumerate(users, start):
            amount = rng.randrange(1, 100)
            truth.add(user, amount)
            value = orjson.dumps(
                {
                    "user_id": user,
                    "amount": amount,
                    "page": f"/catalog/item/{rng.randrange(100_000):06d}",
                    "session": f"s-{rng.getrandbits(64):016x}",
                    "ts": 1_700_000_000_000 + i,
                    "agent": "Mozilla/5.0 (X11; Linux x86_64)",
                }
            )
            while True:
                try:
                    producer.produce(topic, value, user.encode(), timestamp=t0 + i * 1000 // RATE)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    producer.flush(120)
    return truth
