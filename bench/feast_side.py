"""The Feast peer: Feast's own MongoDB online store, measured. Runs in bench/.venv-feast.

Usage: python bench/feast_side.py --mongo-uri URI --database DB --entities N --reads R --out FILE

It builds a throwaway Feast repo in a temp dir (project `bench`, local provider, file registry,
`online_store: type: mongodb`), applies one entity `user_id` and one feature view
`user_activity` (clicks_1h, spend_1h, last_country), then measures:

- write_seconds: N entities written through `FeatureStore.write_to_online_store`;
- read_1_ms / read_100_ms: R latencies each of `get_online_features` for 1 and for 100 random
  entities, after 20 warm-up calls;
- regression: a newer value, then an older replay of the same key; which one is served. Feast's
  MongoDB store writes with an unconditional `$set` upsert, so the older value wins.

Standalone on purpose: it imports neither tidemark nor anything else from bench/.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast import __version__ as feast_version
from feast.types import Float64, Int64, String

FEATURES = ["user_activity:clicks_1h", "user_activity:spend_1h", "user_activity:last_country"]
WARMUP = 20


def build_store(repo: Path, mongo_uri: str, database: str) -> FeatureStore:
    """A Feast repo defined in code: MongoDB online store, file registry, unused file source."""
    parquet = repo / "user_activity.parquet"
    frame(["u0"], [0], datetime.now(UTC)).to_parquet(parquet)
    config = RepoConfig(
        project="bench",
        provider="local",
        registry=str(repo / "registry.db"),
        online_store={"type": "mongodb", "connection_string": mongo_uri, "database_name": database},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    user = Entity(name="user_id", join_keys=["user_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="user_activity",
        entities=[user],
        ttl=timedelta(days=1),
        schema=[
            Field(name="clicks_1h", dtype=Int64),
            Field(name="spend_1h", dtype=Float64),
            Field(name="last_country", dtype=String),
        ],
        source=FileSource(path=str(parquet), timestamp_field="event_timestamp"),
        online=True,
    )
    store = FeatureStore(config=config)
    store.apply([user, view])
    return store


def frame(ids: list[str], clicks: list[int], ts: datetime) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ids,
            "clicks_1h": clicks,
            "spend_1h": [c * 1.5 for c in clicks],
            "last_country": ["DE"] * len(ids),
            "event_timestamp": [ts] * len(ids),
        }
    )


def timed_reads(store: FeatureStore, ids: list[str], batch: int, reads: int) -> list[float]:
    """Latencies (ms) of `reads` get_online_features calls for `batch` random entities each."""
    rng = random.Random(batch)
    latencies = []
    for i in range(WARMUP + reads):
        rows = [{"user_id": u} for u in rng.sample(ids, batch)]
        start = time.perf_counter()
        store.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
        if i >= WARMUP:
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def regression_demo(store: FeatureStore) -> dict[str, Any]:
    """A newer value (T2), then a late replay with an older event time (T1); what is served?"""
    t2 = datetime.now(UTC)
    t1 = t2 - timedelta(hours=1)
    store.write_to_online_store("user_activity", frame(["u0"], [100], t2))
    store.write_to_online_store("user_activity", frame(["u0"], [1], t1))
    served = store.get_online_features(features=FEATURES, entity_rows=[{"user_id": "u0"}])
    value = served.to_dict()["clicks_1h"][0]
    regressed = value == 1
    return {"newer_written": 100, "older_written_after": 1, "served": value, "regressed": regressed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mongo-uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="feast-bench-") as tmp:
        store = build_store(Path(tmp), args.mongo_uri, args.database)
        ids = [f"u{i}" for i in range(args.entities)]
        rows = frame(ids, list(range(args.entities)), datetime.now(UTC))
        start = time.perf_counter()
        store.write_to_online_store("user_activity", rows)
        write_seconds = time.perf_counter() - start

        result = {
            "feast_version": feast_version,
            "write_seconds": write_seconds,
            "entities": args.entities,
            "read_1_ms": timed_reads(store, ids, 1, args.reads),
            "read_100_ms": timed_reads(store, ids, min(100, len(ids)), args.reads),
            "regression": regression_demo(store),
        }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
