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
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymongo.database import Database

from tests.hostile import EXAMPLES, good_records, hostile_records, interleave, run_in_memory
from tests.integration.examples.example_runs import local_example
from tests.pipelines import WorkerProcess, produce, read_topic, wait_caught_up
from tests.support import Services, TopicFactory
from tidemark.config import load_topology
from tidemark.features.validation import Gate, Row
from tidemark.processor.kafka.topics import route_topics

# A failing example is a batch of large records: its repr is large too.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]
_runs = itertools.count()


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
    local = local_example(
        example.stem, tmp_path, services, sync_db.name, lambda name: make_topic(f"{name}{run}")
    )
    topology = load_topology(example, env={})
    routes = route_topics(topology)
    rng = random.Random(seed)
    good = good_records(example, "good-77aa", 60)
    records = interleave(good, [r for rs in bad for r in rs], lambda: rng.randrange(1 << 30))
    expected, rejected, _ = run_in_memory(example, records)

    if group := topology.feature_group:  # each run its own group, as its own state
        sync_db.drop_collection("feature_groups")
        sync_db.drop_collection(f"features.{group.group}")
        sync_db.drop_collection(f"features.{group.group}.history")
    produce(services, local.source, records, partition=0)
    worker = WorkerProcess(local.path, tmp_path / f"worker-{run}.log").start()
    try:
        try:
            wait_caught_up(sync_db, local.name, {0: len(records)}, 90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{worker.tail()}") from None
        assert worker.terminate(30) == 0, worker.tail()
    finally:
        worker.stop_if_running()
    assert "Traceback" not in worker.log.read_text(errors="replace"), worker.tail(60)

    for topic in [topology.sink_topic, *routes]:
        if topic is None:
            continue
        want = [(e.key, e.value) for e in expected if (e.topic or topology.sink_topic) == topic]
        outputs = read_topic(services, local.topics[topic], 1, len(want))
        assert [(m.key().decode(), orjson.loads(m.value())) for m in outputs] == want
    if group := topology.feature_group:  # the newest row of each entity is served
        newest: dict[str, Row] = {}
        for e in expected:
            row = Gate(group).row(e.value, e.key, e.timestamp, 0, e.offset)
            if row.entity not in newest or row.order > newest[row.entity].order:
                newest[row.entity] = row
        stored = {d["e"]: d["v"] for d in sync_db[f"features.{group.group}"].find()}
        assert stored == {entity: row.values for entity, row in newest.items()}
    letters = read_topic(services, local.dead_letters, 1, len(rejected))
    offsets = {}
    for letter in letters:
        headers = dict(letter.headers() or [])
        assert headers["tidemark.error.message"].strip(), headers
        offsets[int(headers["tidemark.source.offset"])] = headers["tidemark.error.message"]
    assert set(offsets) == set(rejected)
