"""A bug in our code stops the worker loudly, commits nothing half done, and a restart
recovers exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.pipelines import (
    Truth,
    assert_outputs,
    counting_pipeline,
    outputs_by_key,
    produce_clicks,
    read_topic,
    state_values,
)
from tests.support import Services, TopicFactory
from tidemark.config import load_topology
from tidemark.processor.kafka.transaction import Transaction
from tidemark.processor.runtime.worker import Worker

pytestmark = pytest.mark.integration
USERS = [f"u{i:02d}" for i in range(30)]


class Bug(RuntimeError):
    """Stands for a defect of ours, raised halfway through emitting a batch."""


async def test_a_bug_mid_batch_stops_the_worker_and_a_restart_loses_nothing(
    services: Services,
    make_topic: TopicFactory,
    sync_db: Database[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # W stays where it was pinned while C moves: a half-done batch would be flushed past W.
    checkpoint = {"interval": "300ms", "max_records": 500, "state_interval": "1h"}
    source, sink, name, path = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, 1, checkpoint=checkpoint
    )
    topology = load_topology(path)
    truth = Truth()
    produce_clicks(services, source, truth, USERS, 300, seed=1)
    produce_all = Transaction.produce_all
    emitted = 0

    def buggy(self: Transaction, topic: str, records: list[Any], partition: int | None) -> None:
        nonlocal emitted
        if emitted < 400 <= emitted + len(records):  # a later batch, its state applied by now
            produce_all(self, topic, records[: 400 - emitted], partition)
            raise Bug("a defect of ours")
        emitted += len(records)
        produce_all(self, topic, records, partition)

    monkeypatch.setattr(Transaction, "produce_all", buggy)
    task = asyncio.create_task(Worker(topology, owner="buggy").run())
    await asyncio.to_thread(read_topic, services, sink, 1, 300)  # committed: C is at 300
    await asyncio.to_thread(produce_clicks, services, source, truth, USERS, 300, 2)
    with pytest.raises(Bug):
        await asyncio.wait_for(task, 60)
    monkeypatch.setattr(Transaction, "produce_all", produce_all)

    produce_clicks(services, source, truth, USERS, 300, seed=3)
    fixed = Worker(topology, owner="fixed")
    task = asyncio.create_task(fixed.run())
    try:
        outputs = await asyncio.to_thread(read_topic, services, sink, 1, truth.count)
    finally:
        fixed.stop()  # commits everything: W reaches the end
        await asyncio.wait_for(task, 60)
    assert_outputs(outputs_by_key(outputs), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()
