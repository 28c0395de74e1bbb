"""`make soak`: half an hour of steady traffic with worker kills, a MongoDB restart and a
broker restart; at the end outputs and state are exact, and a long-lived worker's memory
and open files are flat. Writes bench/results/soak.md. Not part of `make test`."""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from tests.pipelines import (
    Truth,
    WorkerProcess,
    assert_outputs,
    counting_pipeline,
    end_offsets,
    outputs_by_key,
    read_topic,
    state_values,
    wait_caught_up,
)
from tests.private_stack import PrivateKafka, PrivateMongo
from tests.support import Services, Topics

pytestmark = [pytest.mark.soak, pytest.mark.timeout(0)]
ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("SOAK_SECONDS", "1800"))
RATE = int(os.environ.get("SOAK_RATE", "300"))  # events per second
PARTITIONS = 4
USERS = [f"s{i:04d}" for i in range(2000)]


class Traffic(threading.Thread):
    """Produces at a steady rate; a record counts in `truth` once the broker acknowledged it
    (idempotent, retried for minutes: a broker restart delays records, never drops them)."""

    def __init__(self, services: Services, topic: str, truth: Truth) -> None:
        super().__init__(daemon=True)
        self.topic, self.truth, self.stop = topic, truth, threading.Event()
        self.producer = Producer(
            {
                "bootstrap.servers": services.kafka,
                "enable.idempotence": True,
                "message.timeout.ms": 600_000,
                "linger.ms": 20,
                "log_level": 0,
            }
        )
        self.failed = 0

    def run(self) -> None:
        rng, sent, started = random.Random(1), 0, time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * RATE)
            for _ in range(due - sent):
                user, amount = rng.choice(USERS), rng.randint(1, 9)
                body = orjson.dumps({"user": user, "amount": amount})
                self.producer.produce(
                    self.topic, body, user.encode(), on_delivery=self._delivered(user, amount)
                )
            sent = max(sent, due)
            self.producer.poll(0.05)
        assert self.producer.flush(600) == 0

    def _delivered(self, user: str, amount: int) -> Any:
        def done(error: Any, _: Any) -> None:
            if error is None:
                self.truth.add(user, amount)
            else:
                self.failed += 1

        return done


def sample(pid: int) -> tuple[float, int]:
    """RSS in MiB and open file descriptors of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    xs, ys = [t for t, _ in points], [v for _, v in points]
    return statistics.linear_regression(xs, ys).slope * 3600


def test_soak(tmp_path: Path, unique_name: Any) -> None:
    kafka, mongo = PrivateKafka(tmp_path), PrivateMongo(tmp_path)
    kafka.start()
    mongo.start()
    services = Services(kafka.bootstrap, mongo.uri)
    topics = Topics(
        AdminClient({"bootstrap.servers": kafka.bootstrap, "log_level": 0}), unique_name
    )
    client: MongoClient[Any] = MongoClient(mongo.uri, serverSelectionTimeoutMS=60_000)
    db = client["soak"]
    source, sink, name, topology = counting_pipeline(topics, services, "soak", tmp_path, PARTITIONS)
    truth = Truth()
    traffic = Traffic(services, source, truth)
    steady = WorkerProcess(topology, tmp_path / "steady.log").start()
    assert steady.proc is not None
    victims: list[WorkerProcess] = []
    events: list[str] = []
    memory: list[tuple[float, float]] = []
    files: list[tuple[float, float]] = []
    rng = random.Random(3)
    started = time.monotonic()
    outages = {SECONDS / 3: mongo, 2 * SECONDS / 3: kafka}
    next_kill = started + rng.uniform(60, 120)
    traffic.start()
    try:
        victim = WorkerProcess(topology, tmp_path / "victim-0.log").start()
        victims.append(victim)
        while (now := time.monotonic()) - started < SECONDS:
            elapsed = now - started
            if now >= next_kill:
                victim.kill()
                events.append(f"{elapsed:6.0f}s  killed a worker (SIGKILL)")
                time.sleep(rng.uniform(2, 10))
                victim = WorkerProcess(topology, tmp_path / f"victim-{len(victims)}.log").start()
                victims.append(victim)
                next_kill = time.monotonic() + rng.uniform(60, 120)
            for at, server in list(outages.items()):
                if elapsed >= at:
                    del outages[at]
                    down = 30.0 if server is mongo else 10.0
                    server.stop()
                    events.append(f"{elapsed:6.0f}s  stopped {server.name} for {down:.0f}s")
                    time.sleep(down)
                    server.start()
                    events.append(f"{time.monotonic() - started:6.0f}s  {server.name} back")
            assert steady.proc.poll() is None, steady.tail()
            if elapsed > 120:  # after warm-up: caches and buffers full
                rss, fds = sample(steady.proc.pid)
                memory.append((elapsed, rss))
                files.append((elapsed, fds))
            time.sleep(5)
        traffic.stop.set()
        traffic.join(600)
        assert traffic.failed == 0
        wait_caught_up(db, name, end_offsets(services, source, PARTITIONS), 300, steady.tail())
        assert steady.terminate(60) == 0, steady.tail()
        victim.terminate(60)
        found = outputs_by_key(read_topic(services, sink, PARTITIONS, truth.count, timeout=600))
        assert_outputs(found, truth.outputs())
        assert state_values(db, name) == truth.totals()
    finally:
        traffic.stop.set()
        for w in [steady, *victims]:
            w.stop_if_running()
        client.close()
        kafka.close()
        mongo.close()

    restarts = sum(1 for line in steady.log.read_text().splitlines() if "worker_started" in line)
    report = [
        "# Soak",
        "",
        f"{SECONDS / 60:.0f} minutes at {RATE} events/s into {PARTITIONS} partitions "
        f"({truth.count:,} events, {len(USERS)} keys); one worker never killed, a second "
        f"killed with SIGKILL {len(victims) - 1} times; MongoDB stopped once for 30 s, the "
        "broker once for 10 s.",
        "",
        f"- outputs and state: exact ({truth.count:,} outputs, {len(truth.totals())} keys)",
        f"- long-lived worker: {restarts} start(s), RSS {memory[0][1]:.0f} → "
        f"{memory[-1][1]:.0f} MiB, slope {slope_per_hour(memory):+.1f} MiB/h; open files "
        f"{files[0][1]:.0f} → {files[-1][1]:.0f}, slope {slope_per_hour(files):+.1f}/h",
        "",
        "Timeline:",
        "",
        "```",
        *events,
        "```",
    ]
    out = ROOT / "bench/results/soak.md"
    out.write_text("\n".join(report) + "\n")
    print("\n".join(report))
