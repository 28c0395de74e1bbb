"""Hypothesis-generated hostile records through a real worker on every example topology:
it never crashes, dead-letters exactly the records it must with a reason, and its outputs
are exactly what the operators make of the rest."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymongo.database import Database

from tests.hostile import EXAMPLES, good_records, hostile_records, interleave, run_in_memory
from tests.pipelines import (
    WorkerProcess,
    checkpoint_offsets,
    produce,
    read_topic,
)
from tests.support import Services, TopicFactory, wait_until
from tidemark.config import load_topology
from tidemark.processor.kafka.topics import route_topics

# A failing example is a batch of large records: its repr is large too.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]
_runs = itertools.count()


def local_copy(
    example: Path, folder: Path, services: Services, db: str, topics: dict[str, str]
) -> Path:
    """The example pointed at the test's services, topics and database."""
    doc = yaml.safe_load(example.read_text())
    doc["name"] = f"{doc['name']}-{topics['source']}"
    doc["kafka"] = {
        "bootstrap_servers": services.kafka,
        "consumer": {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300},
    }
    doc["mongo"] = {"uri": services.mongo_uri, "database": db}
    doc["source"]["topic"] = topics["source"]
    doc["sink"]["topic"] = topics["sink"]
    for step in doc["pipeline"]:  # route topics: the test's own too
        for branch in step.get("route", []):
            for field in ("to", "otherwise"):
                if field in branch:
                    branch[field] = topics[branch[field]]
    doc["errors"] = {"dead_letter_topic": topics["dlq"]}
    doc["checkpoint"] = {"interval": "300ms", "state_interval": "600ms"}
    doc.pop("snapshots", None)
    path = folder / f"{example.stem}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
@settings(
    max_examples=2,
    deadline=None,
    phases=[Phase.generate],  # each example runs a worker: no shrinking
    suppress_health_check=list(HealthCheck),
)
@given(
    bad=st.lists(hostile_records, min_size=3, max_size=3),
    seed=st.integers(0, 2**32),
)
def test_a_worker_fed_hostile_records_dead_letters_them_and_stays_exact(
    example: Path,
    bad: list[list[tuple[bytes | None, bytes]]],
    seed: int,
    services: Services,
    make_topic: TopicFactory,
    sync_db: Database[Any],
    tmp_path: Path,
) -> None:
    run = next(_runs)
    topics = {"source": make_topic(f"in{run}"), "sink": make_topic(f"out{run}")}
    topics["dlq"] = make_topic(f"dlq{run}")
    routes = route_topics(load_topology(example, env={}))
    topics |= {route: make_topic(f"route{run}-{i}") for i, route in enumerate(routes)}
    rng = random.Random(seed)
    good = good_records(example, "good-77aa", 60)
    records = interleave(good, [r for rs in bad for r in rs], lambda: rng.randrange(1 << 30))
    expected, rejected, _ = run_in_memory(example, records)
    topology = local_copy(example, tmp_path, services, sync_db.name, topics)
    name = yaml.safe_load(topology.read_text())["name"]

    produce(services, topics["source"], records, partition=0)
    worker = WorkerProcess(topology, tmp_path / f"worker-{run}.log").start()
    try:
        wait_until(
            lambda: (checkpoint_offsets(sync_db, name).get(0) or 0) >= len(records),
            90,
            f"the worker to get through {len(records)} records",
        )
        assert worker.terminate(30) == 0, worker.tail()
    finally:
        worker.stop_if_running()
    assert "Traceback" not in worker.log.read_text(errors="replace"), worker.tail(60)

    for topic in [None, *routes]:  # None: the sink
        want = [(e.key, e.value) for e in expected if e.topic == topic]
        outputs = read_topic(services, topics[topic or "sink"], 1, len(want))
        assert [(m.key().decode(), orjson.loads(m.value())) for m in outputs] == want
    letters = read_topic(services, topics["dlq"], 1, len(rejected))
    offsets = {}
    for letter in letters:
        headers = dict(letter.headers() or [])
        assert headers["tidemark.error.message"].strip(), headers
        offsets[int(headers["tidemark.source.offset"])] = headers["tidemark.error.message"]
    assert set(offsets) == set(rejected)
