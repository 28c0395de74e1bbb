"""A real zombie: a worker frozen with SIGSTOP in the middle of its work, replaced by a new
group member and fenced again by a replay, then resumed. Nothing it does may land."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
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
USERS = [f"z{i:03d}" for i in range(80)]
PARTITIONS = 2


@contextlib.contextmanager
def group_offsets(services: Services, group: str, topic: str) -> Iterator[Callable[[], Any]]:
    """A reader of the group's committed offsets (C) per partition, -1 where none."""
    consumer = Consumer(
        {"bootstrap.servers": services.kafka, "group.id": group, "enable.auto.commit": False}
    )

    def read() -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}

    try:
        yield read
    finally:
        consumer.close()


def events(log: Path, name: str) -> list[dict[str, Any]]:
    """The structured log lines of a worker whose event is `name`."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(line)
            if isinstance(doc, dict) and doc.get("event") == name:
                found.append(doc)
    return found


def epochs(db: Database[Any], name: str) -> dict[int, int]:
    return {d["partition"]: d.get("epoch", 0) for d in db[CHECKPOINTS].find({"topology": name})}


def test_a_frozen_worker_resumed_after_a_takeover_and_a_replay_changes_nothing(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, sink, name, topology = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, PARTITIONS
    )
    truth = Truth()
    zombie = WorkerProcess(topology, tmp_path / "zombie.log")
    second = WorkerProcess(topology, tmp_path / "second.log")
    seed = 0

    def logs() -> str:
        workers = (zombie, second)
        return "\n".join(f"--- {w.log}\n{w.tail()}" for w in workers if w.log.exists())

    def ends() -> dict[int, int]:
        return end_offsets(services, source, PARTITIONS)

    def clicks(n: int) -> None:
        nonlocal seed
        seed += 1
        produce_clicks(services, source, truth, USERS, n, seed)

    try:
        with group_offsets(services, name, source) as committed:
            # 1. The future zombie owns both partitions and catches up.
            zombie.start()
            assert zombie.proc is not None
            clicks(2000)
            wait_caught_up(sync_db, name, ends(), 60, logs())
            before = ends()

            # 2. Events keep flowing; once it committed some of them to Kafka, freeze it in
            # the middle of the rest: fetched records, an open transaction, unflushed state.
            deadline = time.monotonic() + 30
            while not all(c > before[p] for p, c in committed().items()):
                assert time.monotonic() < deadline, f"no commit past {before}\n{logs()}"
                clicks(150)
            clicks(1000)
            os.kill(zombie.proc.pid, signal.SIGSTOP)
            at_freeze = {"C": committed(), "W": checkpoint_offsets(sync_db, name), "end": ends()}
            frozen_epochs = epochs(sync_db, name)
            assert at_freeze["C"] != at_freeze["end"], f"nothing left in hand: {at_freeze}"

            # 3. While it is frozen the group moves on: a second member takes both partitions
            # once the frozen one's session (3 s) has expired...
            second.start()
            wait_until(
                lambda: (
                    {e["partition"] for e in events(second.log, "partition_assigned")}
                    == set(range(PARTITIONS))
                ),
                60,
                "the second worker to take both partitions",
            )
            assert zombie.proc.poll() is None, f"the frozen worker died\n{logs()}"
            # ... and an operator replays partition 0 from the start, fencing it once more.
            clicks(500)
            replay = tidemark("replay", topology, "--partition", "0", "--from-start")
            assert replay.code == 0, f"{replay.stderr}\n{logs()}"
            assert replay.doc["begin"] == 0 and replay.doc["clear_state"], replay.doc
            clicks(500)
            wait_caught_up(sync_db, name, ends(), 60, logs())
            moved_on = epochs(sync_db, name)
            assert all(moved_on[p] > frozen_epochs[p] for p in range(PARTITIONS)), moved_on
            assert moved_on[0] >= frozen_epochs[0] + 3, "takeover, replay, hand-back"

            # 4. The zombie wakes up with everything it had in hand while new events arrive.
            # It must find out that it was replaced, drop what it held, rejoin and go on.
            resumed_at = len(zombie.log.read_bytes())
            os.kill(zombie.proc.pid, signal.SIGCONT)
            clicks(300)

            def zombie_rejoined() -> bool:
                assert zombie.proc is not None and zombie.proc.poll() is None, logs()
                return b'"partition_assigned"' in zombie.log.read_bytes()[resumed_at:]

            wait_until(zombie_rejoined, 60, f"the zombie to rejoin the group\n{logs()}")
            clicks(300)
            wait_caught_up(sync_db, name, ends(), 60, logs())
            # A few more commit intervals for whatever the zombie still tries.
            clicks(200)
            wait_caught_up(sync_db, name, ends(), 60, logs())

        # 5. Stop everything cleanly (the zombie may have exited already).
        assert second.terminate(timeout=30) == 0, logs()
        zombie_exit = zombie.terminate(timeout=30)
        assert zombie_exit == 0, logs()
        assert b"Traceback" not in zombie.log.read_bytes(), zombie.tail(80)
    finally:
        for w in (zombie, second):  # never leave a stopped process behind
            if w.proc is not None and w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, signal.SIGCONT)
            w.stop_if_running()

    context = (
        f"at the freeze {at_freeze}, epochs {frozen_epochs}; zombie exit code {zombie_exit}; "
        f"logs in {tmp_path}"
    )
    try:
        found = outputs_by_key(read_topic(services, sink, PARTITIONS, truth.count))
        assert_outputs(found, truth.outputs())
        assert state_values(sync_db, name) == truth.totals()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{context}") from None
    # None of its writes landed: it fenced nobody. The second worker gave partition 0 to the
    # replay through a hand-off, so the only way it can lose a partition under its feet is
    # an epoch bump by the zombie.
    fenced = events(second.log, "partition_dropped")
    assert not fenced, f"the zombie fenced the live owner: {fenced}\n{context}"
