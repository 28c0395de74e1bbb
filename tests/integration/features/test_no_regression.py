"""Served features never go back: a replay from a snapshot, a replay from the start, a
snapshot restore and a late duplicate all re-derive rows that are older than (or the same
as) the stored ones, so the stored documents stay exactly as they were, checked while each
operation runs. Two versions of one group materialize and serve side by side, and a second
topology cannot take over a version with another schema."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pymongo.database import Database

from tests.pipelines import (
    WorkerProcess,
    end_offsets,
    produce,
    tidemark,
    wait_caught_up,
    write_topology,
)
from tests.support import Services, TopicFactory, wait_until
from tidemark.features import FeatureClient

pytestmark = pytest.mark.integration
USERS = [f"user-{i:02d}" for i in range(20)]
BASE = int(time.time() * 1000) - 3_600_000


def features_sink(group: str, version: int, **schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "features": {
            "group": group,
            "version": version,
            "entity": "user",
            "schema": schema or {"count": {"type": "int"}, "total": {"type": "float"}},
        }
    }


def topology(
    tmp_path: Path,
    services: Services,
    db: str,
    name: str,
    source: str,
    sink: dict[str, Any],
    **extra: Any,
) -> Path:
    path = write_topology(tmp_path / f"{name}.yaml", services, db, name, source, "unused", **extra)
    return _with(path, sink=sink, source={"topic": source, "key": "user", "time": "ts"})


def _with(path: Path, **changes: Any) -> Path:
    doc = yaml.safe_load(path.read_text())
    doc.update(changes)
    for step in doc["pipeline"]:
        step["aggregate"]["compute"]["country"] = {"last": "country"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Clicks:
    """Clicks with increasing event times; what each user's features must be."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def produce(self, services: Services, topic: str, n: int) -> None:
        batch = []
        for _ in range(n):
            i = len(self.sent)
            click = {"user": USERS[i * 7 % len(USERS)], "amount": i % 9 + 1, "ts": BASE + i * 1000}
            click["country"] = ("NL", "DE", "FR")[i % 3]
            self.sent.append(click)
            batch.append((click["user"].encode(), orjson.dumps(click)))
        produce(services, topic, batch)

    def features(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for c in self.sent:
            was = found.get(c["user"], {"count": 0, "total": 0.0})
            found[c["user"]] = {"count": was["count"] + 1, "total": was["total"] + c["amount"]}
        return found


def stored(db: Database[Any], group: str) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d for d in db[f"features.{group}"].find()}


class Watch:
    """Reads the stored documents over and over while an operation runs; any change is a
    regression or a needless rewrite."""

    def __init__(self, db: Database[Any], group: str) -> None:
        self._db, self._group = db, group
        self.before = stored(db, group)
        self.changed: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = stored(self._db, self._group)
            self.reads += 1
            self.changed += [i for i, d in now.items() if self.before.get(i) != d]
            self._stop.wait(0.05)


def test_replays_restores_and_late_duplicates_leave_served_features_as_they_were(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source = make_topic("clicks", 2)
    group = f"activity_{source[-8:].replace('-', '_')}"
    path = topology(
        tmp_path,
        services,
        sync_db.name,
        "feats",
        source,
        features_sink(group, 1),
        snapshots={"every_records": 100, "retain": 50},
    )
    clicks = Clicks()
    worker = WorkerProcess(path, tmp_path / "w.log").start()
    try:
        for _ in range(2):  # two rounds: two snapshots of partition 0 at least
            clicks.produce(services, source, 200)
            wait_caught_up(sync_db, "feats", end_offsets(services, source, 2), 90, worker.tail())
        query = {"topology": "feats", "partition": 0}
        wait_until(lambda: sync_db["snapshots"].count_documents(query) >= 2, 30, "2 snapshots")
        clicks.produce(services, source, 200)
        wait_caught_up(sync_db, "feats", end_offsets(services, source, 2), 90, worker.tail())
        with FeatureClient(services.mongo_uri, sync_db.name) as client:
            served = client.get(group, USERS)
        assert {
            v.entity: {k: v.values[k] for k in ("count", "total")} for v in served
        } == clicks.features()

        operations = [
            ("replay", path, "--partition", "0", "--from-snapshot", "1"),
            ("replay", path, "--partition", "1", "--from-start"),
            ("snapshot", "restore", path, "--partition", "0", "--version", "1"),
        ]
        for args in operations:
            with Watch(sync_db, group) as watch:
                done = tidemark(*args)
                assert done.code == 0, done.stderr
                wait_caught_up(
                    sync_db, "feats", end_offsets(services, source, 2), 90, worker.tail()
                )
            assert watch.reads > 3 and watch.changed == [], (args, watch.changed[:5])

        # A late duplicate: an early click again, with its old event time. The aggregate
        # counts it (dedupe is a `dedupe` step's job), but its row is older than the one
        # served for that user, so readers keep seeing the newer value.
        late = clicks.sent[3]
        with Watch(sync_db, group) as watch:
            produce(services, source, [(late["user"].encode(), orjson.dumps(late))])
            wait_caught_up(sync_db, "feats", end_offsets(services, source, 2), 90, worker.tail())
        assert watch.reads > 3 and watch.changed == []
    finally:
        worker.stop_if_running()
    assert "Traceback" not in (tmp_path / "w.log").read_text()


def test_two_versions_serve_side_by_side_and_a_version_keeps_its_definition(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source = make_topic("clicks", 1)
    group = f"activity_{source[-8:].replace('-', '_')}"
    v1 = topology(tmp_path, services, sync_db.name, "v1", source, features_sink(group, 1))
    v2 = topology(
        tmp_path,
        services,
        sync_db.name,
        "v2",
        source,
        features_sink(group, 2, count={"type": "int"}, country={"type": "str"}),
    )
    clicks = Clicks()
    clicks.produce(services, source, 60)
    workers = [WorkerProcess(p, tmp_path / f"{p.stem}.log").start() for p in (v1, v2)]
    try:
        for name, w in zip(("v1", "v2"), workers, strict=True):
            wait_caught_up(sync_db, name, end_offsets(services, source, 1), 60, w.tail())
        with FeatureClient(services.mongo_uri, sync_db.name) as client:
            [latest] = client.get(group, USERS[0])
            [first] = client.get(group, USERS[0], version=1)
        expected = clicks.features()[USERS[0]]
        last_country = [c["country"] for c in clicks.sent if c["user"] == USERS[0]][-1]
        assert (latest.version, latest.values) == (
            2,
            {"count": expected["count"], "country": last_country},
        )
        assert (first.version, first.values) == (1, expected)

        taken = write_topology(
            tmp_path / "thief.yaml", services, sync_db.name, "thief", source, "x"
        )
        _with(
            taken,
            sink=features_sink(group, 1, count={"type": "int"}),
            source={"topic": source, "key": "user"},
        )
        thief = WorkerProcess(taken, tmp_path / "thief.log").start()
        assert thief.wait(60) == 3, thief.tail()
        assert "is materialized by topology 'v1'" in thief.tail()
    finally:
        for w in workers:
            w.stop_if_running()
