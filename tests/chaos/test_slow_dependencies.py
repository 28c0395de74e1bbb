"""MongoDB and the broker answering slowly (200 ms added to every chunk they send, for 30 s
each): commits take longer, and nothing else happens: no fencing, no rebalance, no abort,
no wait for an outage, and the outputs and state stay exact."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

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
)
from tests.private_stack import SlowStack
from tests.support import Topics

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
USERS = [f"l{i:03d}" for i in range(100)]
PARTITIONS = 2
SLOW_FOR = 30.0
DELAY = 0.2
# What a slow dependency must not cause.
NEVER = ("partition_dropped", "kafka_transaction_aborted", "dependency_unavailable", "Traceback")


@pytest.fixture
def topics(slow_stack: SlowStack, unique_name: Any) -> Iterator[Topics]:
    admin = AdminClient({"bootstrap.servers": slow_stack.kafka.bootstrap, "log_level": 0})
    made = Topics(admin, unique_name)
    yield made
    made.delete_all()


def test_slow_mongodb_then_a_slow_broker_only_slow_the_worker_down(
    slow_stack: SlowStack, topics: Topics, unique_name: Any, tmp_path: Path
) -> None:
    direct = slow_stack.direct
    db_name = unique_name("l").replace("-", "_")[:60]
    client: MongoClient[Any] = MongoClient(direct.mongo_uri, serverSelectionTimeoutMS=30_000)
    db = client[db_name]
    source, sink, name, topology = counting_pipeline(
        topics, slow_stack.proxied, db_name, tmp_path, PARTITIONS
    )
    truth, seed = Truth(), 0

    def clicks(n: int) -> None:
        nonlocal seed
        seed += 1
        produce_clicks(direct, source, truth, USERS, n, seed)

    def caught_up(timeout: float) -> None:
        ends = end_offsets(direct, source, PARTITIONS)
        wait_caught_up(db, name, ends, timeout, worker.tail())

    worker = WorkerProcess(topology, tmp_path / "worker.log").start()
    try:
        clicks(2000)
        caught_up(60)
        assigned = worker.log.read_text().count('"partition_assigned"')
        for proxy in (slow_stack.mongo_proxy, slow_stack.kafka_proxy):
            proxy.delay = DELAY
            until = time.monotonic() + SLOW_FOR
            while time.monotonic() < until:  # traffic all along
                clicks(100)
                time.sleep(0.5)
            proxy.delay = 0.0
            caught_up(90)
            assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        assert worker.terminate(30) == 0, worker.tail()
    finally:
        slow_stack.mongo_proxy.delay = slow_stack.kafka_proxy.delay = 0.0
        worker.stop_if_running()

    log = worker.log.read_text(errors="replace")
    for sign in NEVER:
        assert sign not in log, f"{sign} while slow:\n{worker.tail(60)}"
    assert log.count('"partition_assigned"') == assigned, "a rebalance while slow"
    found = outputs_by_key(read_topic(direct, sink, PARTITIONS, truth.count))
    assert_outputs(found, truth.outputs())
    assert state_values(db, name) == truth.totals()
    client.drop_database(db_name)
    client.close()
