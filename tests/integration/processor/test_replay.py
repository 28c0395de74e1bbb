"""Replay, restore and snapshots through the `tidemark` CLI while real workers run."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pymongo.database import Database

from tests.pipelines import (
    Truth,
    WorkerProcess,
    assert_outputs,
    checkpoint_offsets,
    counting_pipeline,
    end_offsets,
    outputs_by_key,
    produce,
    produce_clicks,
    read_topic,
    state_values,
    tidemark,
    tidemark_popen,
    wait_caught_up,
)
from tests.support import Services, TopicFactory, wait_until
from tidemark.state.chunks import CHUNKS
from tidemark.state.names import CHECKPOINTS, state_collection

pytestmark = pytest.mark.integration
USERS = [f"u{i:03d}" for i in range(40)]


def test_replay_one_of_four_partitions_while_two_workers_run_the_rest(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, sink, name, topology = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, 4
    )
    workers = [WorkerProcess(topology, tmp_path / f"w{i}.log").start() for i in range(2)]
    logs = lambda: "\n".join(f"--- {w.log.name}\n{w.tail()}" for w in workers)  # noqa: E731
    truth = Truth()
    try:
        produce_clicks(services, source, truth, USERS, 4000, seed=1)
        wait_caught_up(sync_db, name, end_offsets(services, source, 4), 90, logs())
        plan = tidemark("replay", topology, "--partition", "1", "--from-start", "--dry-run")
        assert plan.code == 0, plan.stderr
        assert plan.doc["dry_run"] and plan.doc["begin"] == 0 and plan.doc["clear_state"]
        assert plan.doc["end"] == end_offsets(services, source, 4)[1]

        replay = tidemark_popen(
            "replay", topology, "--partition", "1", "--from-start", log=tmp_path / "replay.json"
        )
        others_at_start = checkpoint_offsets(sync_db, name)
        seed = 10
        while replay.poll() is None:  # events keep flowing to every partition meanwhile
            produce_clicks(services, source, truth, USERS, 200, seed=seed)
            seed += 1
            with contextlib.suppress(subprocess.TimeoutExpired):
                replay.wait(0.3)
        others_at_end = checkpoint_offsets(sync_db, name)
        result = orjson.loads((tmp_path / "replay.json").read_bytes() or b"null")
        err = (tmp_path / "replay.err").read_text()
        assert replay.returncode == 0, f"{result}\n{err}\n{logs()}"
        assert result["replayed"] > 0 and result["begin"] == 0

        produce_clicks(services, source, truth, USERS, 400, seed=99)
        wait_caught_up(sync_db, name, end_offsets(services, source, 4), 90, logs())
        status = tidemark("status", topology)
    finally:
        for w in workers:
            w.stop_if_running()

    # The others never paused: only partition 1 was handed off, and they kept checkpointing.
    handoffs = [
        orjson.loads(line)["partition"]
        for w in workers
        for line in w.log.read_text().splitlines()
        if '"partition_handed_off"' in line
    ]
    assert handoffs == [1], logs()
    for p in (0, 2, 3):
        assert (others_at_end[p] or 0) > (others_at_start[p] or 0), f"partition {p} stalled"
    assert_outputs(outputs_by_key(read_topic(services, sink, 4, truth.count)), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()
    assert status.code == 0 and [r["status"] for r in status.doc] == ["running"] * 4
    assert all(r["owner"] and r["lag"] == 0 and r["epoch"] >= 1 for r in status.doc), status.doc
    assert status.doc[1]["epoch"] >= 3, "the replay fenced the owner, the owner took it back"


def test_restore_an_older_snapshot_and_replay_to_the_same_state(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, sink, name, topology = counting_pipeline(
        make_topic,
        services,
        sync_db.name,
        tmp_path,
        2,
        snapshots={"every_records": 100, "retain": 50},  # several per partition
    )
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    truth = Truth()
    try:
        for seed in range(4):  # a few rounds, so several snapshots exist
            produce_clicks(services, source, truth, USERS, 500, seed=seed)
            wait_caught_up(sync_db, name, end_offsets(services, source, 2), 90, worker.tail())
        # The snapshot follows its checkpoint in the same task: wait for the second.
        query = {"topology": name, "partition": 0}
        wait_until(lambda: sync_db["snapshots"].count_documents(query) >= 2, 30, "2 snapshots")
        snaps = tidemark("snapshot", "list", topology, "--partition", "0")
        assert snaps.code == 0 and len(snaps.doc) >= 2, snaps
        first = snaps.doc[0]
        assert first["version"] == 1 and first["same_topology"] and first["keys"] > 0
        assert first["offset"] < snaps.doc[-1]["offset"]

        replayed = tidemark("replay", topology, "--partition", "0", "--from-snapshot", "1")
        assert replayed.code == 0, replayed.stderr
        assert replayed.doc["begin"] == first["offset"] and replayed.doc["restore_version"] == 1

        restored = tidemark("snapshot", "restore", topology, "--partition", "1", "--version", "1")
        assert restored.code == 0, restored.stderr
        assert restored.doc["restored_keys"] > 0
        # The owner picks partition 1 up again from the restored offset, state only.
        wait_until(lambda: "partitions_handed_back" in worker.log.read_text(), 30, "the hand-back")
        produce_clicks(services, source, truth, USERS, 300, seed=9)
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 90, worker.tail())
    finally:
        worker.stop_if_running()
    assert state_values(sync_db, name) == truth.totals()
    assert_outputs(outputs_by_key(read_topic(services, sink, 2, truth.count)), truth.outputs())


def test_a_corrupt_chunk_fails_the_restore_and_changes_nothing(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, _, name, topology = counting_pipeline(
        make_topic,
        services,
        sync_db.name,
        tmp_path,
        1,
        snapshots={"chunk_bytes": 1024},
    )
    truth = Truth()
    users = [f"user-{i}" for i in range(3000)]
    produce_clicks(services, source, truth, users, 3000, seed=1)
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    try:
        wait_caught_up(sync_db, name, end_offsets(services, source, 1), 90, worker.tail())
    finally:
        assert worker.terminate(30) == 0
    taken = tidemark("snapshot", "take", topology, "--partition", "0")  # offline: no owner
    assert taken.code == 0, taken.stderr
    assert taken.doc["version"] == 1 and taken.doc["keys"] == 3000
    chunk = sync_db[CHUNKS].find_one({"owner": f"{name}:0:1", "n": 1})
    assert chunk is not None
    data = bytearray(chunk["data"])
    data[10] ^= 0x01
    sync_db[CHUNKS].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})
    before = list(sync_db[state_collection(name)].find().sort("_id"))
    checkpoint = sync_db[CHECKPOINTS].find_one({"topology": name})

    for command in (
        ("snapshot", "restore", topology, "--partition", "0", "--version", "1"),
        ("replay", topology, "--partition", "0", "--from-snapshot", "1"),
    ):
        result = tidemark(*command)
        assert result.code == 1, result
        assert "chunk 1 does not match its checksum" in result.doc["error"]
    assert list(sync_db[state_collection(name)].find().sort("_id")) == before
    assert sync_db[CHECKPOINTS].find_one({"topology": name}) == checkpoint


def test_a_poison_failed_partition_is_repaired_by_fixing_the_topology_and_replaying(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, _, name, topology = counting_pipeline(
        make_topic,
        services,
        sync_db.name,
        tmp_path,
        2,
        errors={"max_consecutive_failures": 5, "dead_letter_topic": f"{make_topic('d')}"},
    )
    truth = Truth()
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    try:
        produce_clicks(services, source, truth, USERS, 600, seed=1)
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 90, worker.tail())
        # Amounts sent as strings: the sum fails on each, the partition fails after five.
        poison = [(b"u-poison", orjson.dumps({"user": "u-poison", "amount": "12"}))] * 8
        produce(services, source, poison, partition=1)
        for _ in range(8):
            truth.add("u-poison", 12)
        wait_until(
            lambda: sync_db[CHECKPOINTS].find_one({"topology": name, "status": "failed"}),
            60,
            "partition 1 to fail",
        )
        status = tidemark("status", topology)
        failed = status.doc[1]
        assert (failed["status"], failed["dead_letters"]) == ("failed", 8), status.doc
        assert "must be a number" in failed["error"]
        produce_clicks(services, source, truth, USERS, 300, seed=2)  # p1's wait behind
        assert worker.terminate(30) == 0

        # The fix: coerce amounts to numbers. Deployed to the worker, then the replay.
        doc = yaml.safe_load(topology.read_text())
        doc["pipeline"].insert(0, {"map": {"amount": "int(amount)"}})
        topology.write_text(yaml.safe_dump(doc, sort_keys=False))
        worker = WorkerProcess(topology, tmp_path / "w2.log").start()
        wait_until(
            lambda: worker.log.read_text().count('"partition_assigned"') == 2, 60, "assignment"
        )
        repaired = tidemark("replay", topology, "--partition", "1", "--from-start")
        assert repaired.code == 0, repaired.stderr
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 90, worker.tail())
        status = tidemark("status", topology)
        assert [r["status"] for r in status.doc] == ["running", "running"], status.doc
        assert status.doc[1]["error"] is None
    finally:
        worker.stop_if_running()
    assert state_values(sync_db, name) == truth.totals()


def test_incremental_snapshots_answer_as_of_offset_queries(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, _, name, topology = counting_pipeline(
        make_topic,
        services,
        sync_db.name,
        tmp_path,
        1,
        snapshots={"mode": "incremental", "every_records": 250, "retain": 100, "full_every": 3},
    )
    truth = Truth()
    seen: list[tuple[int, dict[str, Any]]] = []  # (checkpoint, every key's value then)
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    try:
        for seed in range(5):
            produce_clicks(services, source, truth, USERS[:6], 200, seed=seed)
            end = end_offsets(services, source, 1)[0]
            query = {"topology": name, "offset": end, "changelog": end}
            wait_until(lambda q=query: sync_db[CHECKPOINTS].find_one(q), 60, f"changelog at {end}")
            seen.append((end, state_values(sync_db, name)))
        kinds = [s["kind"] for s in tidemark("snapshot", "list", topology, "--partition", "0").doc]
        assert "full" in kinds and "delta" in kinds, kinds
    finally:
        worker.stop_if_running()

    for checkpoint, values in seen:
        for user in ("u000", "u003"):
            got = tidemark(
                "state", "get", topology, "--operator", "agg", "--key", user,
                "--as-of-offset", str(checkpoint),
            )  # fmt: skip
            assert got.code == 0, got.stderr
            assert (got.doc[0]["value"], got.doc[0]["checkpoint"]) == (values[user], checkpoint)
    now = tidemark("state", "get", topology, "--operator", "agg", "--key", "u000")
    assert now.doc[0]["value"] == truth.totals()["u000"]
