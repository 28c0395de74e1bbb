"""Workers as real processes over real Kafka and MongoDB: rebalances keep outputs exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.pipelines import (
    Truth,
    WorkerProcess,
    assert_outputs,
    counting_pipeline,
    end_offsets,
    outputs_by_key,
    produce_clicks,
    read_topic,
    state_values,
    wait_caught_up,
    write_topology,
)
from tests.support import Services, TopicFactory

pytestmark = pytest.mark.integration
USERS = [f"u{i:03d}" for i in range(60)]


def test_counts_exact_across_joins_and_leaves(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, sink, name, topology = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, 4
    )
    workers = [WorkerProcess(topology, tmp_path / f"w{i}.log") for i in range(3)]
    logs = lambda: "\n".join(f"--- {w.log.name}\n{w.tail()}" for w in workers if w.proc)  # noqa: E731
    truth = Truth()
    try:
        workers[0].start()
        workers[1].start()
        produce_clicks(services, source, truth, USERS, 3000, seed=1)
        wait_caught_up(sync_db, name, end_offsets(services, source, 4), 90, logs())

        workers[2].start()  # joins mid-stream: a rebalance while events flow
        produce_clicks(services, source, truth, USERS, 1500, seed=2)
        workers[2].wait_for_log("partition_assigned", 60)
        produce_clicks(services, source, truth, USERS, 1500, seed=4)
        wait_caught_up(sync_db, name, end_offsets(services, source, 4), 90, logs())

        assert workers[0].terminate(timeout=0.3 + 5) == 0  # leaves: interval + 5 s
        produce_clicks(services, source, truth, USERS, 3000, seed=3)
        wait_caught_up(sync_db, name, end_offsets(services, source, 4), 90, logs())
    finally:
        for w in workers:
            w.stop_if_running()

    assert_outputs(outputs_by_key(read_topic(services, sink, 4, truth.count)), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()


def test_missing_source_topic_is_a_clear_error(
    services: Services, sync_db: Database[Any], tmp_path: Path
) -> None:
    topology = write_topology(
        tmp_path / "t.yaml", services, sync_db.name, "nosource", "does-not-exist", "nor-this"
    )
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    assert worker.wait(60) == 3
    assert "source topic 'does-not-exist' does not exist" in worker.tail()
