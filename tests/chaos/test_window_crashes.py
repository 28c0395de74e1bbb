"""Windows closing under SIGKILL at the steps of the commit protocol, and under a replay:
every final result exactly once, every late record dead-lettered once, the same results
as the operator computes record by record in memory."""

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
from tidemark.config.aggregation import Aggregate
from tidemark.operators import Event, InMemoryState
from tidemark.operators.registry import _aggregate

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
PARTITIONS = 2
USERS = [f"u{i:02d}" for i in range(30)]
STEPS: dict[str, Any] = {
    "hopping": {
        "id": "per_second",
        "key": "user",
        "time": "ts",
        "window": {"type": "hopping", "size": "2s", "step": "1s", "grace": "300ms"},
        "compute": {"n": "count", "total": {"sum": "amount"}},
    },
    "sliding": {
        "id": "sliding",
        "key": "user",
        "time": "ts",
        "window": {"type": "sliding", "size": "1s", "grace": "200ms"},
        "compute": {"n": "count", "total": {"sum": "amount"}},
    },
    "session": {
        "id": "sessions",
        "key": "user",
        "time": "ts",
        "window": {"type": "session", "gap": "700ms", "grace": "200ms"},
        "compute": {"n": "count", "total": {"sum": "amount"}},
    },
}


class Stream:
    """Records per partition with event times that mostly rise, some out of order."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sent: dict[int, list[dict[str, Any]]] = {p: [] for p in range(PARTITIONS)}
        # Event times of today: outputs carry them as Kafka timestamps, and the broker's
        # retention would delete records stamped 1970 while the test reads them.
        self.clock = dict.fromkeys(range(PARTITIONS), int(time.time() * 1000))

    def produce(self, services: Services, topic: str, n: int) -> None:
        for p in range(PARTITIONS):
            records = []
            for _ in range(n // PARTITIONS):
                self.clock[p] += self.rng.randint(0, 60)
                late = self.rng.random() < 0.05
                ts = self.clock[p] - (self.rng.randint(300, 2500) if late else 0)
                user = self.rng.choice(USERS[p::PARTITIONS])
                value = {"user": user, "ts": ts, "amount": self.rng.randint(1, 9)}
                self.sent[p].append(value)
                records.append((user.encode(), orjson.dumps(value)))
            produce(services, topic, records, partition=p)

    def expected(self, step: dict[str, Any]) -> tuple[list[tuple[Any, ...]], int]:
        """What the operator gives record by record in memory: outputs and late records."""
        outputs: list[tuple[Any, ...]] = []
        late = 0
        for p, values in self.sent.items():
            spec = Aggregate.model_validate(step)
            window = spec.window
            assert window is not None
            op = _aggregate(spec)
            state = InMemoryState()
            errors: list[Any] = []
            for offset, value in enumerate(values):
                event = Event(value["user"], value, offset, 0)
                out = asyncio.run(op.run([event], state, lambda _, x, e=errors: e.append(x)))
                outputs += [summary(e.key, e.value) for e in out]
            late += len(errors)
            assert all(x.reason == "late" for x in errors), errors
            del p
        return sorted(outputs), late


def summary(key: Any, value: dict[str, Any]) -> tuple[Any, ...]:
    return (key, value["window_start"], value["window_end"], value["n"], value["total"])


@pytest.mark.parametrize("kind", list(STEPS))
def test_windows_close_exactly_once_through_kills_and_a_replay(
    kind: str,
    services: Services,
    make_topic: TopicFactory,
    sync_db: Database[Any],
    tmp_path: Path,
) -> None:
    step = STEPS[kind]
    source, sink = make_topic("events", PARTITIONS), make_topic("windows", PARTITIONS)
    dlq = f"{source}-dlq"
    make_topic.adopt(dlq)
    name = f"w-{source[-6:]}"
    topology = write_topology(
        tmp_path / "t.yaml",
        services,
        sync_db.name,
        name,
        source,
        sink,
        pipeline=[{"aggregate": step}],
        checkpoint={"interval": "200ms", "max_records": 300, "state_interval": "1ms"},
        # Small update commands, so that a crash in `flush_state` leaves a partial flush.
        state={"flush_statements": 7},
    )
    doc = yaml.safe_load(topology.read_text())
    doc["source"]["time"] = "ts"  # outputs carry event times too
    topology.write_text(yaml.safe_dump(doc))
    stream = Stream(seed=len(kind))
    stream.produce(services, source, 1000)
    for i, point in enumerate(("commit_transaction", "flush_state", "move_checkpoint")):
        worker = WorkerProcess(
            topology, tmp_path / f"{point}.log", {"TIDEMARK_FAULT": f"{point}:n=3"}
        ).start()

        def feed(i: int = i) -> None:
            stream.produce(services, source, 100)

        assert worker.run_until_exit(feed, 120) == -9, worker.tail()
    stream.produce(services, source, 600)
    survivor = WorkerProcess(topology, tmp_path / "survivor.log").start()
    try:
        ends = end_offsets(services, source, PARTITIONS)
        wait_caught_up(sync_db, name, ends, 120, survivor.tail())
        # Rebuild partition 0 from the start: its closed windows must not come out again.
        replay = tidemark("replay", topology, "--partition", "0", "--from-start")
        assert replay.code == 0, replay.stderr
        stream.produce(services, source, 200)
        wait_caught_up(sync_db, name, end_offsets(services, source, PARTITIONS), 120)
        assert survivor.terminate(30) == 0, survivor.tail()
    finally:
        survivor.stop_if_running()

    expected, late = stream.expected(step)
    assert late > 0 and len(expected) > 100, (late, len(expected))
    found = read_topic(services, sink, PARTITIONS, len(expected))
    got = sorted(summary(m.key().decode(), orjson.loads(m.value())) for m in found)
    missing = sorted(set(expected) - set(got))[:5]
    doubled = [g for g in set(got) if got.count(g) > 1][:5]
    assert got == expected, f"missing {missing}, doubled {doubled}"
    letters = read_topic(services, dlq, PARTITIONS, late)
    reasons = {dict(m.headers() or [])["tidemark.error.reason"] for m in letters}
    assert reasons == {b"late"}, reasons
