"""The direct path in process, without Kafka or MongoDB: CPU per record of decode, fold and
encode, with the fold in C (`fold_encoded`) and in Python (`fold_batch`), beside the raw
loop's orjson decode, dict aggregation and orjson encode. Interleaved rounds, medians.

Usage: python -m bench.direct [--events N] [--keys 100,100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import orjson
import yaml
from confluent_kafka import Message

from tidemark.config.loader import parse_topology
from tidemark.operators import InMemoryState, RecordError, build_pipeline
from tidemark.processor.runtime.decoding import Decoder

BATCH = 2000
TOPOLOGY = {
    "name": "direct",
    "kafka": {"bootstrap_servers": "unused:9092"},
    "mongo": {"uri": "mongodb://unused", "database": "unused"},
    "source": {"topic": "in", "key": "user_id"},
    "pipeline": [
        {
            "aggregate": {
                "id": "per_user",
                "key": "user_id",
                "compute": {"count": "count", "total": {"sum": "amount"}},
            }
        }
    ],
    "sink": {"topic": "out"},
}


def batches(events: int, keys: int) -> list[list[Message]]:
    """The benchmark's clicks (`bench/workload.py`'s shape), as consumed batches."""
    rng = random.Random(1)
    names = [f"user-{i:07d}" for i in range(keys)]
    weights = list(accumulate(1.0 / rank for rank in range(1, keys + 1)))
    messages = []
    for i, user in enumerate(rng.choices(names, cum_weights=weights, k=events)):
        value = {
            "user_id": user,
            "amount": rng.randrange(1, 100),
            "page": f"/catalog/item/{rng.randrange(100_000):06d}",
            "session": f"s-{rng.getrandbits(64):016x}",
            "ts": 1_700_000_000_000 + i,
            "agent": "Mozilla/5.0 (X11; Linux x86_64)",
        }
        messages.append(
            Message(offset=i, value=orjson.dumps(value), timestamp=(1, 1_700_000_000_000 + i))
        )
    return [messages[i : i + BATCH] for i in range(0, events, BATCH)]


def tidemark(native: bool) -> Callable[[list[list[Message]]], None]:
    topology = parse_topology(yaml.safe_dump(TOPOLOGY))

    def run(all_batches: list[list[Message]]) -> None:
        op, decoder, state = (
            build_pipeline(topology).direct,
            Decoder(topology.source),
            InMemoryState(),
        )
        assert op is not None

        def on_error(event: Any, exc: RecordError) -> None:
            raise exc

        async def go() -> None:
            for batch in all_batches:
                keys: set[str] = set()
                records = decoder.folded(batch, op.key_path, {}, keys)
                latest = await op.latest(keys, state)
                if native:
                    op.fold_encoded(records, latest, state, on_error, 0)
                else:
                    outs = op.fold_batch(records, latest, state, on_error)
                    [(k.encode(), orjson.dumps(v), ts) for k, v, _, ts in outs]

        asyncio.run(go())

    return run


def raw(all_batches: list[list[Message]]) -> None:
    """`bench/ceiling.py`'s loop without Kafka."""
    totals: dict[str, list[int]] = {}
    for batch in all_batches:
        for m in batch:
            value = orjson.loads(m.value())  # type: ignore[arg-type]  # never None here
            key = value["user_id"]
            agg = totals.get(key)
            if agg is None:
                agg = totals[key] = [0, 0]
            agg[0] += 1
            agg[1] += value["amount"]
            orjson.dumps({"count": agg[0], "total": agg[1]})
            key.encode()


# Without it glibc gives the top of the heap back after each batch and takes it again in
# the next, tens of thousands of `brk` calls whose page faults can be most of a run's CPU
# (a worker, whose heap top is held by long-lived objects, makes few: checked with strace).
NO_TRIM = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def main() -> None:
    if not NO_TRIM.items() <= os.environ.items():
        command = [sys.executable, "-m", "bench.direct", *sys.argv[1:]]
        os.execve(sys.executable, command, os.environ | NO_TRIM)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--keys", default="100,100000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    contenders = {"raw loop": raw, "fold in C": tidemark(True), "fold in Python": tidemark(False)}
    print("| keys | " + " | ".join(contenders) + " | C / Python |")
    print("|---:|" + "---:|" * (len(contenders) + 1))
    for keys in (int(k) for k in args.keys.split(",")):
        data = batches(args.events, keys)
        gc.freeze()  # as a worker does (processor/cli/main.py)
        gc.set_threshold(50_000, 50, 100)
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, run in contenders.items():
                started = time.process_time()
                run(data)
                seconds[name].append(time.process_time() - started)
        us = {n: statistics.median(s) / args.events * 1e6 for n, s in seconds.items()}
        cells = " | ".join(f"{us[name]:.2f} µs" for name in contenders)
        print(f"| {keys:,} | {cells} | {us['fold in C'] / us['fold in Python']:.2f} |")
        gc.unfreeze()


if __name__ == "__main__":
    main()
