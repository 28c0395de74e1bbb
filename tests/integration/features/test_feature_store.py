"""config/examples/user-features.yaml on a real worker, read back the three ways a user
would: `FeatureClient`, `AsyncFeatureClient` and `tidemark serve` over HTTP. TTL hides old
values, a gate violation is dead-lettered naming its rule, `as_of` answers the value
current then, and the metadata commands show the group with its lineage. (Regressions under
replay, restore and late duplicates: `test_no_regression.py`.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo.database import Database

from tests.integration.examples.example_runs import dead_letters, local_example
from tests.integration.features.serving import served
from tests.pipelines import WorkerProcess, produce, read_topic, tidemark, wait_caught_up
from tests.support import Services, TopicFactory, wait_until
from tidemark.features import AsyncFeatureClient, FeatureClient, FeatureVector

pytestmark = pytest.mark.integration
MINUTE = 60_000
NOW = int(time.time() * 1000)
T0 = (NOW // (60 * MINUTE) - 3) * 60 * MINUTE  # three whole hours back: one open window
OLD = NOW - 2 * 24 * 60 * MINUTE  # older than the group's ttl (1d)


def click(user: str, t: int, amount: float, country: str) -> dict[str, Any]:
    return {"user_id": user, "ts": t, "amount": amount, "country": country}


RECORDS = [
    click("u4", OLD, 1.0, "FR"),  # first, so it is not late for its window: expired when read
    click("u1", T0, 2.0, "NL"),
    click("u1", T0 + MINUTE, 3.0, "DE"),
    click("u2", T0 + 2 * MINUTE, 1.5, "NL"),
    click("u3", T0 + 3 * MINUTE, -5.0, "NL"),  # spend_1h below min 0: dead-lettered
]


def run_to(db: Database[Any], name: str, end: int, worker: WorkerProcess) -> None:
    try:
        wait_caught_up(db, name, {0: end}, 60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker.tail()}") from None


def test_events_become_features_served_in_python_and_over_http(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    example = local_example("user-features", tmp_path, services, sync_db.name, make_topic)
    keyed = [(r["user_id"].encode(), orjson.dumps(r)) for r in RECORDS]
    produce(services, example.source, keyed, partition=0)
    worker = WorkerProcess(example.path, tmp_path / "worker.log").start()
    try:
        run_to(sync_db, example.name, len(RECORDS), worker)
        with FeatureClient(services.mongo_uri, sync_db.name) as client:
            u1, u2, u3, u4 = client.get("user_activity", ["u1", "u2", "u3", "u4"])
            assert (u1.status, u1.values) == (
                "ok",
                {"clicks_1h": 2, "spend_1h": 5.0, "last_country": "DE"},
            )
            assert (u1.event_time, u1.version) == (T0 + MINUTE, 1)
            assert u1.staleness is not None and u1.staleness > 3600
            assert (u2.status, u2.values["spend_1h"]) == ("ok", 1.5)
            assert u3.status == "missing"  # its only output broke a gate
            assert (u4.status, u4.values["clicks_1h"], u4.event_time) == ("expired", None, OLD)
            # The value current half a minute after the first click, from the history.
            [then] = client.get("user_activity", "u1", as_of=T0 + MINUTE // 2)
            assert (then.values, then.event_time) == (
                {"clicks_1h": 1, "spend_1h": 2.0, "last_country": "NL"},
                T0,
            )

        [letter] = dead_letters(read_topic(services, example.dead_letters, 1, 1))
        assert letter[:2] == (4, "feature_min")
        assert "'spend_1h'" in letter[2] and "'min'" in letter[2]

        [again] = asyncio.run(read_async(services.mongo_uri, sync_db.name, "u1"))
        assert (again.values, again.event_time) == (u1.values, u1.event_time)
    finally:
        worker.stop_if_running()

    with served(example.path, tmp_path / "serve.log", "--monitor-every", "0.2") as http:
        one = http.get("/features/user_activity/u1", params={"features": "clicks_1h"})
        assert one.status_code == 200, one.text
        [vector] = one.json()["entities"]
        assert vector["features"] == {"clicks_1h": 2}
        assert vector["event_time"] == T0 + MINUTE and vector["staleness_seconds"] > 3600
        batch = http.post("/features/user_activity/batch", json={"entities": ["u2", "u3", "u4"]})
        assert [e["status"] for e in batch.json()["entities"]] == ["ok", "missing", "expired"]
        assert http.get("/features/nope/u1").status_code == 404
        assert "/features/{group}/batch" in http.get("/openapi.json").json()["paths"]
        gauge = 'tidemark_feature_entities{group="user_activity",version="1"} 3.0'
        wait_until(lambda: gauge in http.get("/metrics/").text, 10, "the monitor's gauges")
        assert (
            'tidemark_feature_write_lag_seconds{group="user_activity"' in http.get("/metrics/").text
        )

    listed = tidemark("features", "list", example.path)
    assert listed.code == 0, listed.stderr
    assert [(g["group"], g["version"], g["topology"]) for g in listed.doc] == [
        ("user_activity", 1, example.name)
    ]
    described = tidemark("features", "describe", example.path).doc
    assert described["registered"] and described["entities"] == 3
    assert described["lineage"]["spend_1h"] == ["pipeline[0] aggregate activity_1h: sum(amount)"]
    assert described["source_topic"] == example.source
    status = tidemark("status", example.path).doc
    [group] = status["features"]
    assert (group["group"], group["entities"]) == ("user_activity", 3)
    assert group["lag_max_s"] is not None and status["partitions"][0]["checkpoint"] == 5
    assert group["drift"] == {}  # no baseline yet

    baseline = tidemark("features", "baseline", example.path)
    assert baseline.code == 0, baseline.stderr
    assert (baseline.doc["clicks_1h"], baseline.doc["last_country"]) == (3, 3)
    drift = tidemark("features", "describe", example.path).doc["drift"]
    assert set(drift) == {"clicks_1h", "spend_1h", "last_country"}
    assert drift["spend_1h"]["ks"] == 0 and all(d["psi"] < 0.01 for d in drift.values())


async def read_async(uri: str, database: str, entity: str) -> list[FeatureVector]:
    client = AsyncFeatureClient(uri, database)
    try:
        return await client.get("user_activity", entity)
    finally:
        await client.close()
