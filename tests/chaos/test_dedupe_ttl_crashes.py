"""`dedupe` and an aggregate with `ttl` under SIGKILL at the steps of the commit protocol,
and under a replay: every passing record counted once, every resend dropped once, every
expired key forgotten exactly when the operators forget it record by record in memory."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pymongo.database import Database

from tests.pipelines import (
    WorkerProcess,
    end_offsets,
    produce,
    read_topic,
    tidemark,
    wait_caught_up,
    write_topology,
)
from tests.support import Services, TopicFactory
from tidemark.config import load_topology
from tidemark.operators import Event, InMemoryState, build_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
PARTITIONS = 2
USERS = [f"u{i:02d}" for i in range(30)]
PIPELINE: list[dict[str, Any]] = [
    {"dedupe": {"id": "seen", "key": "event_id", "within": "2s"}},
    {
        "aggregate": {
            "id": "per_user",
            "key": "user",
            "time": "ts",
            "ttl": "1s",
            "compute": {"n": "count", "total": {"sum": "amount"}},
        }
    },
]


class Stream:
    """Records per partition with event times that mostly rise, some out of order, and
    resends of recent records (same event id, same time)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sent: dict[int, list[dict[str, Any]]] = {p: [] for p in range(PARTITIONS)}
        # Event times of today: outputs carry them as Kafka timestamps, and the broker's
        # retention would delete records stamped 1970 while the test reads them.
        self.clock = dict.fromkeys(range(PARTITIONS), int(time.time() * 1000))
        self.ids = 0

    def produce(self, services: Services, topic: str, n: int) -> None:
        for p in range(PARTITIONS):
            records = []
            for _ in range(n // PARTITIONS):
                sent = self.sent[p]
                if sent and self.rng.random() < 0.15:
                    value = self.rng.choice(sent[-40:])  # a resend, maybe past `within`
                else:
                    self.clock[p] += self.rng.randint(0, 120)
                    late = self.rng.random() < 0.05
                    self.ids += 1
                    value = {
                        "event_id": f"e{self.ids}",
                        "user": self.rng.choice(USERS[p::PARTITIONS]),
                        "ts": self.clock[p] - (self.rng.randint(300, 2500) if late else 0),
                        "amount": self.rng.randint(1, 9),
                    }
                sent.append(value)
                records.append((value["user"].encode(), orjson.dumps(value)))
            produce(services, topic, records, partition=p)

    def expected(self, topology: Path) -> list[tuple[Any, ...]]:
        """What the pipeline gives record by record in memory."""
        outputs: list[tuple[Any, ...]] = []
        for values in self.sent.values():
            pipeline = build_pipeline(load_topology(topology, env={}))
            states = {op: InMemoryState() for op in pipeline.stateful_ids}
            for offset, value in enumerate(values):
                event = Event(value["user"], value, offset, value["ts"])
                out = asyncio.run(pipeline.process([event], states, _no_errors))
                outputs += [(e.key, e.value["n"], e.value["total"], e.timestamp) for e in out]
        return sorted(outputs)


def _no_errors(event: Event, exc: Exception) -> None:
    raise AssertionError(f"offset {event.offset}: {exc}")


def test_dedupe_and_ttl_stay_exact_through_kills_and_a_replay(
    services: Services,
    make_topic: TopicFactory,
    sync_db: Database[Any],
    tmp_path: Path,
) -> None:
    source, sink = make_topic("events", PARTITIONS), make_topic("counts", PARTITIONS)
    make_topic.adopt(f"{source}-dlq")
    name = f"d-{source[-6:]}"
    topology = write_topology(
        tmp_path / "t.yaml",
        services,
        sync_db.name,
        name,
        source,
        sink,
        pipeline=PIPELINE,
        checkpoint={"interval": "200ms", "max_records": 300, "state_interval": "1ms"},
        # Small update commands, so that a crash in `flush_state` leaves a partial flush.
        state={"flush_statements": 7},
    )
    doc = yaml.safe_load(topology.read_text())
    doc["source"]["time"] = "ts"  # dedupe reads the record's event time; outputs carry it
    topology.write_text(yaml.safe_dump(doc))
    stream = Stream(seed=7)
    stream.produce(services, source, 800)
    for point in ("commit_transaction", "flush_state", "move_checkpoint"):
        worker = WorkerProcess(
            topology, tmp_path / f"{point}.log", {"TIDEMARK_FAULT": f"{point}:n=3"}
        ).start()
        assert worker.run_until_exit(lambda: stream.produce(services, source, 60), 120) == -9, (
            worker.tail()
        )
    stream.produce(services, source, 600)
    survivor = WorkerProcess(topology, tmp_path / "survivor.log").start()
    try:
        wait_caught_up(sync_db, name, end_offsets(services, source, PARTITIONS), 120)
        # Rebuild partition 0 from the start: no expired count may come back, no resend pass.
        replay = tidemark("replay", topology, "--partition", "0", "--from-start")
        assert replay.code == 0, replay.stderr
        stream.produce(services, source, 200)
        wait_caught_up(sync_db, name, end_offsets(services, source, PARTITIONS), 120)
        assert survivor.terminate(30) == 0, survivor.tail()
    finally:
        survivor.stop_if_running()

    expected = stream.expected(topology)
    sent = sum(len(v) for v in stream.sent.values())
    restarts = sum(1 for _, n, *_ in expected if n == 1)
    assert len(expected) < sent - 100, "resends were dropped"
    assert restarts > 4 * len(USERS), "keys expired and started over"
    found = read_topic(services, sink, PARTITIONS, len(expected))
    got = []
    for m in found:
        value = orjson.loads(m.value())
        got.append((m.key().decode(), value["n"], value["total"], m.timestamp()[1]))
    got.sort()
    missing = sorted(set(expected) - set(got))[:5]
    doubled = [g for g in set(got) if got.count(g) > 1][:5]
    assert got == expected, f"missing {missing}, doubled {doubled}"
