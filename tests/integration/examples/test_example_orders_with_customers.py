"""config/examples/orders-with-customers.yaml on a real worker: orders enriched with the
customer row as of their own time (updates and a delete of the table between orders), an
order of an unknown customer with null fields, one not keyed by its customer dead-lettered;
a kill -9 in the middle of a long interleaved run changes no output; a table that is not
co-partitioned stops the worker at start with exit code 3."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer
from pymongo.database import Database

from tests.integration.examples.example_runs import dead_letters, local_example
from tests.pipelines import WorkerProcess, checkpoint_offsets, read_topic, wait_caught_up
from tests.support import Services, TopicFactory

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 3_600_000  # an hour ago: kept by retention, before now
Timed = tuple[int, str, str, dict[str, Any] | None]  # time, topic role, key, value


def caught_up(db: Database[Any], name: str, end: int, worker: WorkerProcess) -> None:
    try:
        wait_caught_up(db, name, {0: end}, 90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker.tail()}") from None


def customer(name: str, tier: str, country: str) -> dict[str, Any]:
    return {"name": name, "tier": tier, "country": country}


def order(order_id: str, customer_id: str, quantity: int, price: float) -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": customer_id, "quantity": quantity, "price": price}


def produce_timed(services: Services, topics: dict[str, str], records: list[Timed]) -> None:
    """Each record to partition 0 of its topic, with its time as the Kafka timestamp."""
    producer = Producer({"bootstrap.servers": services.kafka, "linger.ms": 10})
    for t, role, key, value in records:
        body = orjson.dumps(value) if value is not None else None
        producer.produce(topics[role], body, key.encode(), partition=0, timestamp=T0 + t)
    assert producer.flush(30) == 0, "records not delivered"


RECORDS: list[Timed] = [
    (0, "customers", "c1", customer("Ada", "silver", "NL")),
    (0, "customers", "c2", customer("Bo", "gold", "DE")),
    (0, "customers", "c3", customer("Cy", "bronze", "FR")),
    (10, "orders", "c1", order("o1", "c1", 2, 10.0)),
    (11, "orders", "c2", order("o2", "c2", 1, 99.5)),
    (12, "orders", "c9", order("o3", "c9", 3, 1.25)),  # no such customer: null fields
    (13, "orders", "c1", order("o4", "c2", 1, 5.0)),  # keyed by c1: not co-partitioned
    (20, "customers", "c1", customer("Ada", "gold", "NL")),  # Ada moves up
    (20, "customers", "c3", None),  # Cy is deleted
    (20, "orders", "c1", order("o5", "c1", 1, 7.0)),  # same time as the update: sees it
    (30, "orders", "c3", order("o6", "c3", 1, 2.0)),
]
AS_OF = {  # order: its customer's fields as of its time
    "o1": customer("Ada", "silver", "NL"),
    "o2": customer("Bo", "gold", "DE"),
    "o3": {"name": None, "tier": None, "country": None},
    "o5": customer("Ada", "gold", "NL"),
    "o6": {"name": None, "tier": None, "country": None},
}


def enriched(value: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    total = round(value["quantity"] * value["price"], 2)
    return {**value, **row, "priority": row["tier"] == "gold", "total": total}


def test_orders_get_their_customer_as_of_their_own_time(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    example = local_example("orders-with-customers", tmp_path, services, sync_db.name, make_topic)
    sink = example.topics["orders-enriched"]
    produce_timed(services, example.topics, RECORDS)
    # The table's records come first in the log, the orders' times interleave with them.
    worker = WorkerProcess(example.path, tmp_path / "w.log").start()
    try:
        caught_up(sync_db, example.name, 6, worker)
        outputs = read_topic(services, sink, 1, 5, timeout=20)
        letters = read_topic(services, example.dead_letters, 1, 1, timeout=20)
        assert worker.terminate(timeout=10) == 0, worker.tail()
    finally:
        worker.stop_if_running()

    got = [(m.key().decode(), orjson.loads(m.value()), m.timestamp()[1]) for m in outputs]
    orders = {r[3]["order_id"]: r for r in RECORDS if r[1] == "orders" and r[3]}
    assert [(key, value["order_id"]) for key, value, _ in got] == [
        ("c1", "o1"),
        ("c2", "o2"),
        ("c9", "o3"),
        ("c1", "o5"),
        ("c3", "o6"),
    ]
    for _, value, timestamp in got:
        t, _, _, original = orders[value["order_id"]]
        assert original is not None
        assert value == enriched(original, AS_OF[value["order_id"]])
        assert timestamp == T0 + t  # outputs keep the order's time
    [(offset, reason, message)] = dead_letters(letters)
    assert (offset, reason) == (3, "not_copartitioned")
    assert "'c1' is not its join key 'c2'" in message, message


@pytest.mark.parametrize("fault", ["flush_state:n=3", "commit_transaction:n=4"])
def test_a_kill_in_the_middle_changes_no_output(
    fault: str,
    services: Services,
    make_topic: TopicFactory,
    sync_db: Database[Any],
    tmp_path: Path,
) -> None:
    example = local_example("orders-with-customers", tmp_path, services, sync_db.name, make_topic)
    doc = yaml.safe_load(example.path.read_text())
    # Small flush commands and batches: the flush kill lands between the commands of one
    # state checkpoint, rows and table position half written.
    doc["state"] = {"flush_statements": 10}
    doc["checkpoint"]["max_records"] = 1_000
    example.path.write_text(yaml.safe_dump(doc))
    sink = example.topics["orders-enriched"]
    customers = [f"c{i}" for i in range(40)]
    records: list[Timed] = [(0, "customers", c, customer(c, "bronze", "NL")) for c in customers]
    tiers = ["bronze", "silver", "gold"]
    n_orders = 6_000
    for i in range(n_orders):
        c = customers[(i * 7) % len(customers)]
        if i % 20 == 0:  # the customer's tier changes just before this order
            records.append((i * 10, "customers", c, customer(c, tiers[i // 20 % 3], "NL")))
        records.append((i * 10 + 1, "orders", c, order(f"o{i}", c, 1, 1.0)))
    produce_timed(services, example.topics, records)

    log = tmp_path / "w.log"
    dying = WorkerProcess(example.path, log, {"TIDEMARK_FAULT": fault}).start()
    assert dying.wait(timeout=60) == -9, dying.tail()  # killed at the fault point
    at_kill = checkpoint_offsets(sync_db, example.name).get(0) or 0
    assert at_kill < n_orders, "the worker was done before the kill: nothing was tested"
    second = WorkerProcess(example.path, log).start()
    try:
        caught_up(sync_db, example.name, n_orders, second)
        outputs = read_topic(services, sink, 1, n_orders, timeout=30)
        assert second.terminate(timeout=10) == 0, second.tail()
    finally:
        second.stop_if_running()

    got = [(orjson.loads(m.value())["order_id"], orjson.loads(m.value())["tier"]) for m in outputs]
    assert len(got) == n_orders, "an order lost or emitted twice"
    assert got == expected_tiers(records)


def expected_tiers(records: list[Timed]) -> list[tuple[str, str]]:
    """Each order's tier: its customer's row as of the order's time (table first on a tie)."""
    rows: dict[str, Any] = {}
    table = sorted((r for r in records if r[1] == "customers"), key=lambda r: r[0])
    out, i = [], 0
    for t, role, key, value in records:
        if role != "orders" or value is None:
            continue
        while i < len(table) and table[i][0] <= t:
            rows[table[i][2]] = table[i][3]
            i += 1
        out.append((value["order_id"], rows[key]["tier"]))
    return out


def test_a_table_not_partitioned_like_the_source_stops_the_worker_with_exit_3(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    def topic(name: str) -> str:
        return make_topic(name, partitions=2 if name == "customers" else 1)

    example = local_example("orders-with-customers", tmp_path, services, sync_db.name, topic)
    worker = WorkerProcess(example.path, tmp_path / "w.log").start()
    assert worker.wait(timeout=30) == 3, worker.tail()
    assert "is not co-partitioned with the source" in worker.tail(), worker.tail()
    assert "has 2 partitions" in worker.tail()
