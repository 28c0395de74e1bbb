"""Poison records go to dead letters and nothing stops; a fenced owner stops its partition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
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
    produce,
    produce_clicks,
    read_topic,
    state_values,
    wait_caught_up,
)
from tests.support import Services, TopicFactory, wait_until
from tidemark.state.names import CHECKPOINTS, state_collection

pytestmark = pytest.mark.integration
USERS = [f"u{i}" for i in range(20)]


def test_bad_records_are_dead_lettered_with_reasons(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, sink, name, topology = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, 2, {"max.message.bytes": "3000000"}
    )
    truth = Truth()
    bad = [
        (b"k1", b"{not json", "malformed JSON"),
        (b"k2", orjson.dumps({"amount": 5}), "field 'user' is missing"),
        (b"k3", orjson.dumps({"user": "u1", "amount": "abc"}), "must be a number"),
        (b"k4", orjson.dumps({"user": "u2", "pad": "x" * 2_000_000}), "exceeds max_record_bytes"),
        (b"k5", b"", "empty value"),
    ]
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    try:
        produce_clicks(services, source, truth, USERS, 300, seed=1)
        produce(services, source, [(k, v) for k, v, _ in bad])
        produce_clicks(services, source, truth, USERS, 300, seed=2)
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 60, worker.tail())
        assert worker.proc is not None and worker.proc.poll() is None, "the worker stopped"
    finally:
        worker.stop_if_running()

    letters = read_topic(services, f"{source}-dlq", 2, len(bad))
    by_key = {m.key(): m for m in letters}
    assert sorted(by_key) == [k for k, _, _ in bad]
    for key, value, reason in bad:
        headers = {k: v.decode() for k, v in by_key[key].headers()}
        assert reason in headers["tidemark.error.message"], headers
        assert headers["tidemark.error.class"] == "RecordError"
        assert headers["tidemark.source.topic"] == source
        assert int(headers["tidemark.source.offset"]) >= 0
        if len(value) < 500_000:
            assert (by_key[key].value() or b"") == value
    assert_outputs(outputs_by_key(read_topic(services, sink, 2, truth.count)), truth.outputs())
    assert state_values(sync_db, name) == truth.totals()


def test_fenced_owner_stops_processing_that_partition_only(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, _, name, topology = counting_pipeline(make_topic, services, sync_db.name, tmp_path, 2)
    truth = Truth()
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    try:
        produce_clicks(services, source, truth, USERS, 400, seed=1)
        wait_caught_up(sync_db, name, end_offsets(services, source, 2), 60, worker.tail())
        # A newer owner takes partition 0, as a replay or a new group member would.
        sync_db[CHECKPOINTS].update_one(
            {"topology": name, "partition": 0}, {"$inc": {"epoch": 1}, "$set": {"owner": "newer"}}
        )
        frozen = list(sync_db[state_collection(name)].find({"p": 0}).sort("_id"))
        produce_clicks(services, source, truth, USERS, 400, seed=2)
        worker.wait_for_log('"partition_dropped"', 60)
        ends = end_offsets(services, source, 2)
        wait_until(
            lambda: (checkpoint_offsets(sync_db, name).get(1) or 0) >= ends[1],
            60,
            "partition 1 to keep going",
        )
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        worker.stop_if_running()

    assert list(sync_db[state_collection(name)].find({"p": 0}).sort("_id")) == frozen
    assert (checkpoint_offsets(sync_db, name)[0] or 0) < ends[0]


def test_poison_loop_fails_one_partition_and_the_others_go_on(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, _, name, topology = counting_pipeline(
        make_topic,
        services,
        sync_db.name,
        tmp_path,
        2,
        errors={"max_consecutive_failures": 3, "dead_letter_topic": "unused"},
    )
    make_topic.adopt("unused")
    truth = Truth()
    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    try:
        # Same Kafka key, same partition: five poison records in a row there.
        produce(services, source, [(b"poison", b"{oops")] * 5)
        worker.wait_for_log('"partition_failed"', 60)
        query = {"topology": name, "status": "failed"}
        wait_until(
            lambda: sync_db[CHECKPOINTS].find_one(query) is not None, 30, "a failed checkpoint"
        )
        failed = sync_db[CHECKPOINTS].find_one(query)
        assert failed is not None
        assert "malformed JSON" in failed["error"]
        healthy = 1 - failed["partition"]
        produce_clicks(services, source, truth, USERS, 50, seed=1, partition=healthy)
        ends = end_offsets(services, source, 2)
        wait_until(
            lambda: (checkpoint_offsets(sync_db, name).get(healthy) or 0) >= ends[healthy],
            60,
            "the healthy partition to keep going",
        )
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        worker.stop_if_running()
    assert state_values(sync_db, name) == truth.totals()
