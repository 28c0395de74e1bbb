"""Hand-offs between a worker and an operator: liveness, the fence, a clean hand-back."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from tests.pipelines import (
    Truth,
    counting_pipeline,
    end_offsets,
    produce_clicks,
    wait_caught_up,
    write_topology,
)
from tests.support import Services, TopicFactory, wait_until_async
from tidemark.config import load_topology
from tidemark.processor.cli import ops
from tidemark.processor.coordination.handoff import give_back, take_over
from tidemark.processor.protocol.partition import Phase
from tidemark.processor.runtime.control import Control
from tidemark.processor.runtime.worker import Worker
from tidemark.state import Checkpoints
from tidemark.state.names import CHECKPOINTS

pytestmark = pytest.mark.integration
USERS = [f"u{i:03d}" for i in range(50)]
Db = AsyncDatabase[dict[str, Any]]


async def test_without_an_acknowledgement_the_fence_waits_out_open_transactions(
    services: Services, mongo_db: Db, tmp_path: Path
) -> None:
    """The owner's heartbeat is an hour old: it never acknowledges. Whatever transaction it
    may still have open began before the fence, so the operator waits the transaction
    timeout from the fence, on its own clock (not from the owner's last heartbeat)."""
    path = write_topology(tmp_path / "t.yaml", services, mongo_db.name, "h", "in", "out")
    topology = load_topology(path)  # transaction.timeout.ms: 5000
    checkpoints = Checkpoints(mongo_db, topology.name)
    owner = await checkpoints.acquire("in", 0, "zombie")
    assert owner is not None
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    await mongo_db[CHECKPOINTS].update_one({"_id": owner.id}, {"$set": {"seen_at": an_hour_ago}})

    started = time.monotonic()
    fenced, _ = await take_over(topology, checkpoints, 0, "paused", "op")
    waited = time.monotonic() - started
    assert fenced.epoch == owner.epoch + 1
    assert waited >= 5.0, f"took the partition {waited:.1f}s after fencing a silent owner"
    await give_back(checkpoints, fenced, "running")


async def test_the_heartbeat_stops_when_the_loop_stops_turning(
    services: Services, mongo_db: Db, tmp_path: Path
) -> None:
    path = write_topology(tmp_path / "t.yaml", services, mongo_db.name, "h", "in", "out")
    topology = load_topology(path)
    checkpoints = Checkpoints(mongo_db, topology.name)
    cp = await checkpoints.acquire("in", 0, "w")
    assert cp is not None
    await mongo_db[CHECKPOINTS].update_one({"_id": cp.id}, {"$unset": {"seen_at": ""}})
    turning = False
    beat = asyncio.create_task(
        Control(topology, checkpoints, "w").heartbeat_forever(lambda: {0}, lambda _: turning)
    )
    try:
        await asyncio.sleep(1.0)  # three intervals of a stuck loop: the point is the duration
        stored = await checkpoints.get("in", 0)
        assert stored is not None and stored.seen_at is None, "a stuck loop looked alive"
        turning = True

        async def stamped() -> bool:
            current = await checkpoints.get("in", 0)
            return current is not None and current.live_owner(10) == "w"

        await wait_until_async(stamped, 10, "the heartbeat of a turning loop")
    finally:
        beat.cancel()


async def test_after_a_restore_the_owner_checkpoints_state_from_the_snapshot_on(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    """A restore leaves a consistent cut at W, so the owner re-applies [W, C) with state
    checkpoints from its first record: its memory stays bounded by `max_dirty_keys`."""
    source, _, name, path = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, 1, snapshots={"every_records": 300}
    )
    topology = load_topology(path)
    truth = Truth()
    produce_clicks(services, source, truth, USERS, 400, seed=1)
    worker = Worker(topology, owner="w")
    task = asyncio.create_task(worker.run())
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(services.mongo_uri)
    try:
        await asyncio.to_thread(wait_caught_up, sync_db, name, end_offsets(services, source, 1), 60)
        await asyncio.to_thread(produce_clicks, services, source, truth, USERS, 400, 2)
        await asyncio.to_thread(wait_caught_up, sync_db, name, end_offsets(services, source, 1), 60)
        restored = await ops.snapshot_restore(topology, client[sync_db.name], 0, 1)

        async def handed_back() -> bool:
            part = worker.partitions.get(0)
            return part is not None and part.checkpoint.offset == restored["offset"]

        await wait_until_async(handed_back, 30, "the worker to take partition 0 back")
        part = worker.partitions[0]
        assert part.emit_from > restored["offset"], "C is past the snapshot"
        assert part.cut_from == restored["offset"], "a clean hand-back cuts from W"
        assert part.phase is not Phase.RECOVERING
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
        await client.close()
