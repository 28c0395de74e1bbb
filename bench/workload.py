"""The benchmark workload: JSON clicks of about 200 bytes, Zipf-skewed keys, and the truth."""

from __future__ import annotations

import random
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


def produce_workload(
    bootstrap: str, topic: str, events: int, keys: int, seed: int = 42, skew: float = 1.0
) -> Truth:
    """Produce `events` clicks over `keys` keys (Zipf exponent `skew`), keyed by user."""
    rng = random.Random(seed)
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
                    producer.produce(topic, value, user.encode())
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    producer.flush(120)
    return truth
