"""A crash at every named step of the protocol, in-process, over the real services.

`faults.arm(point, n)` makes the n-th time a worker (or an operation) reaches `point` raise
`Crash`, and every point after it too, so the crashed party writes nothing more; its
open Kafka transaction is aborted, as the broker would after its timeout. The next party
recovers from what the crash left. Outputs and state must come out exact. The process-level
SIGKILL tests in `test_crashes.py` check the same with real kills at a few of these points.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
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
    tidemark,
    wait_caught_up,
)
from tests.support import Services, TopicFactory, wait_until
from tidemark.config import Topology, faults, load_topology
from tidemark.config.faults import Crash
from tidemark.processor.cli import ops
from tidemark.processor.coordination.replay import Replay, Request
from tidemark.processor.runtime.worker import Worker
from tidemark.state.names import CHECKPOINTS

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
USERS = [f"user-{i:03d}" for i in range(200)]
EVERY_STEP = {"interval": "300ms", "max_records": 300, "state_interval": "1ms"}
# Small update commands: a partition's flush spans several, so `flush_state:n=2` stops one
# midway (more dirty keys than one command carries).
STATE = {"flush_statements": 7}
SNAPSHOTS = {"mode": "incremental", "every_records": 400, "full_every": 2, "retain": 100}

# (point, n): the n-th time the point is reached. Each crashes one worker; the next recovers.
WORKER_CRASHES = [
    ("acquire", 2),
    ("send_offsets", 3),
    ("check_epochs", 3),
    ("commit_transaction", 2),
    ("commit_transaction", 5),
    ("write_features", 2),
    ("write_features", 6),
    ("flush_state", 1),
    ("flush_state", 2),  # partial flush inside one partition
    ("flush_state", 9),
    ("move_checkpoint", 2),
    ("append_changelog", 2),
    ("take_snapshot", 1),
    ("write_manifest", 1),  # payload written, manifest not
    ("write_manifest", 2),
    ("publish_snapshot", 1),  # manifest written, not listed
    ("state_checkpoint_done", 2),
]


@pytest.fixture(autouse=True)
def _disarmed() -> Iterator[None]:
    faults.disarm()
    yield
    faults.disarm()


async def run_until_crash(
    worker: Worker, feed: Callable[[], Coroutine[Any, Any, None]], timeout: float
) -> None:
    """Run `worker`, calling `feed` every 0.3 s, until it crashes; fail if it does not."""
    task = asyncio.create_task(worker.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        if loop.time() > deadline:
            worker.stop()
            await asyncio.wait_for(task, 30)
            raise AssertionError(f"no crash within {timeout}s")
        await feed()
        await asyncio.wait({task}, timeout=0.3)
    with pytest.raises(Crash):
        task.result()


async def test_a_worker_crash_at_every_point_loses_and_doubles_nothing(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, sink, name, path = counting_pipeline(
        make_topic,
        services,
        sync_db.name,
        tmp_path,
        2,
        checkpoint=EVERY_STEP,
        state=STATE,
        snapshots=SNAPSHOTS,
    )
    with_features(path, "every_point")
    topology = load_topology(path)
    truth = Truth()
    for seed, (point, n) in enumerate(WORKER_CRASHES):
        await asyncio.to_thread(produce_clicks, services, source, truth, USERS, 600, seed)

        async def feed(seed: int = seed) -> None:
            await asyncio.to_thread(produce_clicks, services, source, truth, USERS, 50, seed)

        faults.arm(point, n)
        await run_until_crash(Worker(topology, owner=f"w-{point}-{n}"), feed, 90)
        faults.disarm()

    survivor = Worker(topology, owner="survivor")
    task = asyncio.create_task(survivor.run())
    try:
        ends = end_offsets(services, source, 2)
        await asyncio.to_thread(wait_caught_up, sync_db, name, ends, 120)
    finally:
        survivor.stop()
        await asyncio.wait_for(task, 60)

    assert truth.count >= 10_000
    outputs = await asyncio.to_thread(read_topic, services, sink, 2, truth.count)
    assert_outputs(outputs_by_key(outputs), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()
    features = {d["e"]: d["v"] for d in sync_db["features.every_point"].find()}
    assert features == truth.totals()


def with_features(path: Path, group: str) -> None:
    """The counting topology with its outputs materialized as features too."""
    doc = yaml.safe_load(path.read_text())
    schema = {"count": {"type": "int"}, "total": {"type": "int"}}
    doc["sink"]["features"] = {"group": group, "version": 1, "entity": "user", "schema": schema}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


# Operations: each crashes once at its point while a worker process owns the partition;
# the next operation takes over with `force` and finishes the job.
OPERATION_CRASHES = [
    ("fence", "restore"),  # marked and acknowledged, not fenced yet
    ("restore_clear", "restore"),
    ("restore_write", "restore"),  # cleared, nothing written back
    ("give_back", "restore"),
    ("restore_clear", "replay"),
    ("flush_state", "replay"),
    ("move_checkpoint", "replay"),
    ("give_back", "replay"),
]


async def operate(operation: str, topology: Topology, db: AsyncDatabase[Any]) -> None:
    if operation == "restore":
        await ops.snapshot_restore(topology, db, 0, None)
    else:
        await Replay(topology, db, progress=False).run(Request(0, "start"), force=True)


async def test_an_operation_crash_at_every_point_is_finished_by_the_next(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, sink, name, path = counting_pipeline(
        make_topic,
        services,
        sync_db.name,
        tmp_path,
        2,
        checkpoint=EVERY_STEP,
        snapshots={"every_records": 200, "retain": 100},
    )
    topology = load_topology(path)
    truth = Truth()
    worker = WorkerProcess(path, tmp_path / "w.log").start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(services.mongo_uri)
    db = client[sync_db.name]
    try:
        produce_clicks(services, source, truth, USERS, 2000, seed=1)
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 90, worker.tail())
        query = {"topology": name, "partition": 0}
        wait_until(lambda: sync_db["snapshots"].count_documents(query) >= 1, 30, "a snapshot")
        for seed, (point, operation) in enumerate(OPERATION_CRASHES, start=10):
            produce_clicks(services, source, truth, USERS, 300, seed)
            faults.arm(point)
            with pytest.raises(Crash):
                await operate(operation, topology, db)
            faults.disarm()
            held = sync_db[CHECKPOINTS].find_one(query)
            assert held is not None and held["status"] in ("paused", "replaying"), held
            # The next operation takes the partition over from the dead one and finishes.
            await Replay(topology, db, progress=False).run(
                Request(0, "snapshot"), force=True, ack_timeout=30
            )
        produce_clicks(services, source, truth, USERS, 300, seed=99)
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 90, worker.tail())
    finally:
        worker.stop_if_running()
        await client.close()

    outputs = await asyncio.to_thread(read_topic, services, sink, 2, truth.count)
    assert_outputs(outputs_by_key(outputs), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()


def test_an_owner_killed_while_acknowledging_a_hand_off_loses_nothing(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    """The owner paused and committed, then died before its acknowledgement landed: the
    replay sees it go silent, fences it, waits out its transactions and goes on."""
    source, sink, name, path = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, 1, checkpoint=EVERY_STEP
    )
    truth = Truth()
    dying = WorkerProcess(path, tmp_path / "dying.log", {"TIDEMARK_FAULT": "acknowledge"})
    survivor = WorkerProcess(path, tmp_path / "survivor.log")
    try:
        dying.start()
        produce_clicks(services, source, truth, USERS, 1000, seed=1)
        wait_caught_up(sync_db, name, end_offsets(services, source, 1), 60, dying.tail())
        produce_clicks(services, source, truth, USERS, 300, seed=2)
        replay = tidemark("replay", path, "--partition", "0", "--from-start", timeout=120)
        assert replay.code == 0, replay.stderr
        assert dying.wait(10) == -9, dying.tail()
        survivor.start()
        produce_clicks(services, source, truth, USERS, 300, seed=3)
        wait_caught_up(sync_db, name, end_offsets(services, source, 1), 90, survivor.tail())
    finally:
        dying.stop_if_running()
        survivor.stop_if_running()
    assert_outputs(outputs_by_key(read_topic(services, sink, 1, truth.count)), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()
