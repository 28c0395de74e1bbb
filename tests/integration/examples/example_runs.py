"""An example topology of `config/examples/` run as it is, on the test's own topics and
database: a copy with only the names and addresses changed, fed crafted records."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from pymongo.database import Database

from tests.pipelines import ROOT, WorkerProcess, produce, read_topic, wait_caught_up
from tests.support import Services
from tidemark.operators.events import iso

EXAMPLES = sorted((ROOT / "config/examples").glob("*.yaml"))
MINUTE = 60_000
# Event times of today, a few hours back (whole hours: windows start on the minute);
# outputs carry them as their Kafka timestamps, and retention deletes old ones.
T0 = (int(time.time() * 1000) // (60 * MINUTE) - 5) * 60 * MINUTE


def at(minutes: float) -> int:
    """Epoch ms `minutes` after T0."""
    return T0 + round(minutes * MINUTE)


def iso_at(minutes: float) -> str:
    """The same as ISO 8601 with a `Z`, as a producer would write it."""
    return dt.datetime.fromtimestamp(at(minutes) / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def window(start: float, end: float) -> dict[str, Any]:
    """The bounds a windowed output carries, from minutes after T0."""
    return {
        "window_start": at(start),
        "window_end": at(end),
        "window_start_iso": iso(at(start)),
        "window_end_iso": iso(at(end)),
    }


@dataclass
class LocalExample:
    path: Path  # the copy
    name: str
    source: str
    topics: dict[str, str]  # the example's topic: this test's
    dead_letters: str


def local_example(
    stem: str,
    folder: Path,
    services: Services,
    db: str,
    topic: Callable[[str], str],
    rename: bool = True,
) -> LocalExample:
    """The example `stem` pointed at this test's services and database, each of its topics
    replaced by `topic(name)`; renamed (consumer group, state namespace) unless told not."""
    doc = yaml.safe_load((ROOT / "config/examples" / f"{stem}.yaml").read_text())
    topics: dict[str, str] = {}

    def local(name: str) -> str:
        if name not in topics:
            topics[name] = topic(name)
        return topics[name]

    doc["source"]["topic"] = source = local(doc["source"]["topic"])
    if doc.get("sink", {}).get("topic"):
        doc["sink"]["topic"] = local(doc["sink"]["topic"])
    for table in doc.get("tables", {}).values():
        table["topic"] = local(table["topic"])
    for step in doc["pipeline"]:
        for branch in step.get("route", []):
            for field in ("to", "otherwise"):
                if field in branch:
                    branch[field] = local(branch[field])
    dead_letters = topic("dlq")
    if rename:
        doc["name"] = f"{doc['name']}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
    doc["kafka"] = {
        "bootstrap_servers": services.kafka,
        "consumer": {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300},
        "producer": {"transaction.timeout.ms": 5000},
    }
    doc["mongo"] = {"uri": services.mongo_uri, "database": db}
    doc["errors"] = {"dead_letter_topic": dead_letters}
    doc["checkpoint"] = {"interval": "300ms", "state_interval": "600ms"}
    doc.pop("snapshots", None)
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return LocalExample(path, doc["name"], source, topics, dead_letters)


Output = tuple[dict[str, Any], int]  # value, Kafka timestamp


def run_example(
    example: LocalExample,
    services: Services,
    db: Database[Any],
    key: str,
    records: list[dict[str, Any]],
    expected: dict[str, int],
    log: Path,
) -> dict[str, list[Any]]:
    """Produce `records` (keyed by their field `key`) to partition 0 of the source, run one
    worker until it is caught up, and read `expected[topic]` records from each topic."""
    produce(
        services,
        example.source,
        [(str(r[key]).encode(), orjson.dumps(r)) for r in records],
        partition=0,
    )
    worker = WorkerProcess(example.path, log).start()
    try:
        try:
            wait_caught_up(db, example.name, {0: len(records)}, 40)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{worker.tail()}") from None
        found = {
            topic: read_topic(services, topic, 1, n, timeout=20) for topic, n in expected.items()
        }
        assert worker.terminate(timeout=10) == 0, worker.tail()
    finally:
        worker.stop_if_running()
    assert "Traceback" not in log.read_text(errors="replace"), worker.tail(60)
    return found


def by_key(messages: list[Any]) -> dict[str, list[Output]]:
    """Each key's outputs in the order they came: value and Kafka timestamp."""
    found: dict[str, list[Output]] = defaultdict(list)
    for m in messages:
        found[m.key().decode()].append((orjson.loads(m.value()), m.timestamp()[1]))
    return dict(found)


def dead_letters(messages: list[Any]) -> list[tuple[int, str, str]]:
    """Each dead letter's source offset, reason and message."""
    found = []
    for m in messages:
        headers = {k: v.decode() for k, v in m.headers() or []}
        found.append(
            (
                int(headers["tidemark.source.offset"]),
                headers["tidemark.error.reason"],
                headers["tidemark.error.message"],
            )
        )
    return sorted(found)
