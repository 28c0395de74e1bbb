"""SIGKILL at every step of the commit protocol and at random moments: nothing lost or doubled."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.pipelines import (
    Truth,
    WorkerProcess,
    assert_outputs,
    checkpoint_offsets,
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
from tidemark.state.names import CHECKPOINTS

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
USERS = [f"user-{i:03d}" for i in range(300)]
CHUNK = 2000


def progress(db: Database[Any], name: str) -> int:
    return sum(o or 0 for o in checkpoint_offsets(db, name).values())


def test_kill_at_each_fault_point_and_at_random(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    # Every commit runs all three steps, so that every fault point is reached often.
    every_step = {"interval": "300ms", "max_records": 500, "state_interval": "1ms"}
    source, sink, name, topology = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, 4, checkpoint=every_step
    )
    truth, kills, seed = Truth(), 0, 0
    rng = random.Random(7)

    # Killed by its own fault point, the n-th time it reaches it (a few commits in).
    for point in ("commit_transaction", "flush_state", "move_checkpoint"):
        for n in (2, 3):
            seed += 1
            produce_clicks(services, source, truth, USERS, CHUNK, seed)
            worker = WorkerProcess(
                topology, tmp_path / f"{point}-{n}.log", {"TIDEMARK_FAULT": f"{point}:n={n}"}
            ).start()

            def feed(seed: int = seed) -> None:
                # State checkpoints run beside processing, so how many a batch of events
                # yields varies: keep events coming until the fault point is reached n times.
                produce_clicks(services, source, truth, USERS, 200, seed)

            assert worker.run_until_exit(feed, 120) == -9, worker.tail()
            kills += 1

    # Killed from outside at a random moment after it made progress.
    for i in range(3):
        seed += 1
        produce_clicks(services, source, truth, USERS, CHUNK, seed)
        before = progress(sync_db, name)
        worker = WorkerProcess(topology, tmp_path / f"random-{i}.log").start()
        try:
            wait_until(lambda b=before: progress(sync_db, name) > b, 120, "the worker to commit")
            wait_until(lambda: rng.random() < 0.05, 5, "a random moment")
        finally:
            worker.kill()
        kills += 1

    seed += 1
    produce_clicks(services, source, truth, USERS, CHUNK, seed)
    survivor = WorkerProcess(topology, tmp_path / "survivor.log").start()
    try:
        wait_caught_up(sync_db, name, end_offsets(services, source, 4), 180, survivor.tail())
        assert survivor.terminate(timeout=10) == 0
    finally:
        survivor.stop_if_running()

    assert kills >= 8
    assert truth.count >= 20_000
    assert_outputs(outputs_by_key(read_topic(services, sink, 4, truth.count)), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()


def test_replay_killed_at_each_fault_point_is_finished_by_the_next_replay(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    """A replay runs the same commit protocol: killed anywhere, `--force` finishes the job."""
    every_step = {"interval": "300ms", "max_records": 500, "state_interval": "1ms"}
    source, sink, name, topology = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, 2, checkpoint=every_step
    )
    truth = Truth()
    produce_clicks(services, source, truth, USERS, 3000, seed=1)
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    try:
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 90, worker.tail())
        for i, point in enumerate(("commit_transaction", "flush_state", "move_checkpoint")):
            produce_clicks(services, source, truth, USERS, 1000, seed=10 + i)
            killed = tidemark(
                "replay", topology, "--partition", "0", "--from-start", *(["--force"] * (i > 0)),
                env={"TIDEMARK_FAULT": f"{point}:n=1"},
            )  # fmt: skip
            assert killed.code == -9, killed
            status = sync_db[CHECKPOINTS].find_one({"topology": name, "partition": 0})
            assert status is not None and status["status"] == "replaying"
        finished = tidemark("replay", topology, "--partition", "0", "--from-start", "--force")
        assert finished.code == 0, finished.stderr
        produce_clicks(services, source, truth, USERS, 500, seed=20)
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 90, worker.tail())
    finally:
        worker.stop_if_running()
    assert_outputs(outputs_by_key(read_topic(services, sink, 2, truth.count)), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()
