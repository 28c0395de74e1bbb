"""A real worker splits orders into lines (`flat_map`), runs a custom step, and routes each
line to one of two topics (`route`, no sink): the exact outputs on each topic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pymongo.database import Database

from tests.pipelines import WorkerProcess, produce, read_topic
from tests.support import Services, TopicFactory

pytestmark = pytest.mark.integration

ORDERS: list[dict[str, Any]] = [
    {
        "order": "o1",
        "lines": [{"sku": "a", "qty": 12, "amount": 1.5}, {"sku": "b", "qty": 1, "amount": 2}],
    },
    {"order": "o2", "lines": []},  # no lines: no output
    {"order": "o3", "lines": [{"sku": "c", "qty": 0, "amount": 9}]},  # no branch, no sink: dropped
    {"order": "o4"},  # no lines field: a dead letter
    {
        "order": "o5",
        "lines": [{"sku": "d", "qty": 3, "amount": 0.25}, {"sku": "e", "qty": 30, "amount": 4}],
    },
]


def line(order: str, sku: str, qty: int, amount: float) -> tuple[str, dict[str, Any]]:
    value = {"order": order, "sku": sku, "qty": qty, "amount": amount, "cents": round(amount * 100)}
    return order, value


def test_lines_are_routed_to_their_topics(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source = make_topic("orders", 2)
    bulk, retail = make_topic("bulk", 2), make_topic("retail", 1)
    make_topic.adopt(f"{source}-dlq")
    doc = {
        "name": f"t-{source[-6:]}",
        "kafka": {
            "bootstrap_servers": services.kafka,
            "consumer": {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300},
            "producer": {"transaction.timeout.ms": 5000},
        },
        "mongo": {"uri": services.mongo_uri, "database": sync_db.name},
        "source": {"topic": source, "key": "order"},
        "pipeline": [
            {"flat_map": {"field": "lines", "as": "line"}},
            {"map": {"sku": "line['sku']", "qty": "line['qty']", "amount": "line['amount']"}},
            {"project": ["order", "sku", "qty", "amount"]},
            {"python": "tests.custom_steps:enrich"},
            {
                "route": [
                    {"when": "qty >= 10", "to": bulk},
                    {"when": "qty > 0", "to": retail},
                ]
            },
        ],
        "checkpoint": {"interval": "300ms"},
        "errors": {"dead_letter_topic": f"{source}-dlq"},
    }
    topology = tmp_path / "t.yaml"
    topology.write_text(yaml.safe_dump(doc, sort_keys=False))
    records: list[tuple[bytes | None, bytes | None]] = [
        (o["order"].encode(), orjson.dumps(o)) for o in ORDERS
    ]
    produce(services, source, records)

    worker = WorkerProcess(topology, tmp_path / "w.log").start()
    try:
        got_bulk = read_topic(services, bulk, 2, 2)
        got_retail = read_topic(services, retail, 1, 2)
        dead = read_topic(services, f"{source}-dlq", 2, 1)
    finally:
        assert worker.terminate(timeout=10) == 0, worker.tail()

    def outputs(messages: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        return sorted(((m.key().decode(), orjson.loads(m.value())) for m in messages), key=repr)

    assert outputs(got_bulk) == sorted([line("o1", "a", 12, 1.5), line("o5", "e", 30, 4)], key=repr)
    assert outputs(got_retail) == sorted(
        [line("o1", "b", 1, 2), line("o5", "d", 3, 0.25)], key=repr
    )
    assert [orjson.loads(m.value()) for m in dead] == [{"order": "o4"}]
    headers = dict(dead[0].headers())
    assert b"field 'lines' is missing" in headers["tidemark.error.message"]
