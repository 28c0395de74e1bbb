"""`tidemark demo FILE` runs every example: it creates the topics, produces sample events,
runs a worker until caught up and prints what came out per topic. And the samples made up
for topologies without a generator of their own go through every example cleanly."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo.database import Database

from tests.hostile import run_in_memory
from tests.integration.examples.example_runs import EXAMPLES, local_example
from tests.pipelines import ROOT
from tests.support import Services, TopicFactory
from tidemark.config import load_topology
from tidemark.processor.cli import samples


@pytest.mark.integration
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_demo_runs_the_example(
    example: Path,
    services: Services,
    make_topic: TopicFactory,
    unique_name: Callable[[str], str],
    sync_db: Database[Any],
    tmp_path: Path,
) -> None:
    def new_topic(name: str) -> str:  # left to the demo to create; deleted afterwards
        unique = unique_name(name)
        make_topic.adopt(unique)
        return unique

    # The example's own name picks its sample generator.
    local = local_example(example.stem, tmp_path, services, sync_db.name, new_topic, rename=False)
    done = subprocess.run(
        [sys.executable, "-m", "tidemark", "demo", str(local.path), "--events", "200"],
        cwd=ROOT,
        capture_output=True,
        timeout=90,
        check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, f"{out}\n{done.stderr.decode()[-3000:]}"

    assert f"topic {local.source}: created, 4 partitions" in out
    assert f"produced 200 events to {local.source!r} (the {example.stem} example's" in out
    assert "caught up in" in out
    topology = load_topology(example, env={})
    inputs = [topology.source.topic, *(t.topic for t in topology.tables.values())]
    for original, topic in local.topics.items():
        if original in inputs:
            continue
        counted = re.search(rf"topic {re.escape(repr(topic))}: (\d+) ", out)
        assert counted, out
        assert int(counted[1]) > 0, out  # windows closed, alerts raised, updates made
    assert "dead letters: 0 in topic" in out, out


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_samples_made_up_from_the_pipeline_fit_it(example: Path) -> None:
    topology = load_topology(example, env={})
    now = int(time.time() * 1000)
    made = samples.derived(topology, random.Random(7), 300, now)
    records: list[tuple[bytes | None, bytes]] = [
        (key.encode() if key is not None else None, orjson.dumps(value)) for key, value in made
    ]

    outputs, rejected, _ = run_in_memory(example, records)

    assert rejected == {}
    assert outputs
    assert all(now - 6 * 3_600_000 <= o.timestamp <= now for o in outputs if topology.source.time)
