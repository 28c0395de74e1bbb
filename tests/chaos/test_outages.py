"""MongoDB and the broker stopped or killed under a running worker: it waits them out,
without a restart, and goes on within seconds of their return with nothing lost or doubled."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
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
from tests.private_stack import PrivateKafka, PrivateMongo, Server, free_port
from tests.support import Services, Topics, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
USERS = [f"o{i:03d}" for i in range(100)]
PARTITIONS = 2
BACK_WITHIN = 10.0  # outputs flow again within this many seconds of the dependency's return
UNSETTLED = "committed_offsets_unsettled"
# (dependency, how it goes down, for how long)
OUTAGES = {
    "mongo-stopped-30s": ("mongo", "stop", 30.0),
    "mongo-killed-10s": ("mongo", "kill", 10.0),
    "broker-stopped-10s": ("kafka", "stop", 10.0),
    "broker-killed-10s": ("kafka", "kill", 10.0),
}


def first_output_after(
    services: Services, topic: str, tail: Callable[[], str]
) -> Callable[[float], float]:
    """From now on, a reader of `topic`'s committed records: `wait(timeout)` returns when the
    first new one is readable (its monotonic time); `tail()` explains a failure."""
    consumer = Consumer(
        {
            "bootstrap.servers": services.kafka,
            "group.id": f"probe-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    ends = end_offsets(services, topic, PARTITIONS)
    consumer.assign([TopicPartition(topic, p, ends[p]) for p in range(PARTITIONS)])

    def wait(timeout: float) -> float:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(0.1)
                if msg is not None and msg.error() is None:
                    return time.monotonic()
            raise AssertionError(f"no output on {topic} within {timeout}s\n{tail()}")
        finally:
            consumer.close()

    return wait


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def log_events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            found.append(doc)
    return found


@pytest.fixture
def topics(private_stack: tuple[PrivateKafka, PrivateMongo], unique_name: Any) -> Iterator[Topics]:
    kafka, _ = private_stack
    made = Topics(AdminClient({"bootstrap.servers": kafka.bootstrap, "log_level": 0}), unique_name)
    yield made
    made.delete_all()


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_the_worker_waits_out_an_outage_and_loses_nothing(
    outage: str,
    request: pytest.FixtureRequest,
    private_stack: tuple[PrivateKafka, PrivateMongo],
    topics: Topics,
    unique_name: Any,
    tmp_path: Path,
) -> None:
    kafka, mongo = private_stack
    which, how, seconds = OUTAGES[outage]
    server: Server = kafka if which == "kafka" else mongo
    services = Services(kafka.bootstrap, mongo.uri)
    db_name = unique_name("o").replace("-", "_")[:60]
    client: MongoClient[Any] = MongoClient(mongo.uri, serverSelectionTimeoutMS=60_000)
    request.addfinalizer(client.close)  # also when an assertion below fails
    db = client[db_name]
    source, sink, name, topology = counting_pipeline(
        topics, services, db_name, tmp_path, PARTITIONS
    )
    truth, seed = Truth(), 0

    def clicks(n: int) -> None:
        nonlocal seed
        seed += 1
        produce_clicks(services, source, truth, USERS, n, seed)

    port = free_port()
    worker = WorkerProcess(topology, tmp_path / "worker.log", args=["--metrics-port", str(port)])
    worker.start()
    try:
        clicks(3000)
        wait_caught_up(db, name, end_offsets(services, source, PARTITIONS), 60, worker.tail())
        clicks(2000)  # mid-stream: records in hand, a transaction open
        getattr(server, how)()
        lines_before = len(worker.log.read_text().splitlines())
        down_until = time.monotonic() + seconds
        if which == "mongo":
            clicks(1000)  # events keep arriving while MongoDB is away
            # Kubernetes would stop routing to it: /readyz fails while it waits.
            wait_until(lambda: readyz(port) == 503, seconds - 1, "/readyz to fail")
        time.sleep(max(0.0, down_until - time.monotonic()))  # the outage itself
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        outputs_after = (
            first_output_after(services, sink, worker.tail) if which == "mongo" else None
        )
        server.start()  # returns once the server answers
        returned = time.monotonic()
        if outputs_after is None:
            outputs_after = first_output_after(services, sink, worker.tail)
        clicks(500)
        back = outputs_after(BACK_WITHIN + 20) - returned
        wait_until(lambda: readyz(port) == 200, 30, "/readyz to pass again")
        print(f"{outage}: outputs again {back:.1f}s after the return")
        during = worker.log.read_text().splitlines()[lines_before:]
        clicks(500)
        wait_caught_up(db, name, end_offsets(services, source, PARTITIONS), 90, worker.tail())
        assert worker.terminate(30) == 0, worker.tail()
    finally:
        worker.stop_if_running()

    found = outputs_by_key(read_topic(services, sink, PARTITIONS, truth.count))
    assert_outputs(found, truth.outputs())
    assert state_values(db, name) == truth.totals()
    client.drop_database(db_name)

    text = worker.log.read_text(errors="replace")
    assert "Traceback" not in text, worker.tail(80)
    events = [e.get("event") for e in log_events(worker.log)]
    assert events.count("worker_started") == 1, "the worker restarted"
    if which == "mongo":  # a broker outage may end in a plain abort, without a wait
        assert "dependency_unavailable" in events and "dependency_recovered" in events, events
    # One line per retry window, not a flood: a handful per outage.
    assert len(during) <= 40, f"{len(during)} log lines during the outage:\n" + "\n".join(during)
    # A commit acknowledged while a one-broker cluster shut down can lose its markers; the
    # worker then waits as long as a transaction can stay open before it reseals it.
    unsettled = [e["seconds"] for e in log_events(worker.log) if e.get("event") == UNSETTLED]
    bound = BACK_WITHIN + sum(unsettled)
    assert back <= bound, f"outputs flowed again {back:.1f}s after the return"
