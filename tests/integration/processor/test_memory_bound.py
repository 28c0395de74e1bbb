"""`checkpoint.max_dirty_keys` bounds a worker's memory between commits too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from pymongo.database import Database

from tests.pipelines import (
    Truth,
    counting_pipeline,
    end_offsets,
    produce_clicks,
    state_values,
    wait_caught_up,
)
from tests.support import Services, TopicFactory, wait_until_async
from tidemark.config import load_topology
from tidemark.processor.runtime.worker import Worker
from tidemark.state import store

pytestmark = pytest.mark.integration


async def test_past_max_dirty_keys_a_worker_commits_and_waits_for_the_state_checkpoint(
    services: Services,
    make_topic: TopicFactory,
    sync_db: Database[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a state checkpoint held back, a worker past the bound commits its transaction
    long before the interval or the record count would, and waits for that checkpoint,
    rather than piling up dirty keys until the interval ends."""
    bounds = {"interval": "1h", "max_records": 1_000_000, "state_interval": "1h"}
    source, _, name, path = counting_pipeline(
        make_topic,
        services,
        sync_db.name,
        tmp_path,
        1,
        checkpoint={**bounds, "max_dirty_keys": 50},
    )
    held = asyncio.Event()
    write = store.send_updates

    async def held_write(*args: Any) -> None:  # a slow MongoDB: the write waits for `held`
        await held.wait()
        await write(*args)

    monkeypatch.setattr(store, "send_updates", held_write)
    probe = Consumer({"bootstrap.servers": services.kafka, "group.id": name})
    worker = Worker(load_topology(path), owner="w")
    task = asyncio.create_task(worker.run())
    truth = Truth()
    try:
        for n, prefix in enumerate("ab", 1):  # 60 new keys each: each time past the bound
            users = [f"{prefix}{i:02d}" for i in range(60)]
            await asyncio.to_thread(produce_clicks, services, source, truth, users, 60, 1)

            async def committed(n: int = n) -> bool:
                [tp] = await asyncio.to_thread(probe.committed, [TopicPartition(source, 0)], 10)
                return tp.offset >= 60 * n

            await wait_until_async(committed, 30, f"round {n} committed, past max_dirty_keys")
        held.set()
        ends = end_offsets(services, source, 1)
        await asyncio.to_thread(wait_caught_up, sync_db, name, ends, 60)
        assert state_values(sync_db, name) == truth.totals()
    finally:
        held.set()
        worker.stop()
        await asyncio.wait_for(task, 60)
        probe.close()
