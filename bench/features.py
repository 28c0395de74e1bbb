"""The feature store beside Feast's MongoDB online store, on the same server and entities.

    python -m bench.features [--entities 10000] [--reads 300] [--runs 3] [--rate 10000]
                             [--fresh-entities 1000] [--seconds 30]

Reads: p50/p99 of 1 and 100 random entities through Tidemark's `FeatureClient` (cache cold:
off; hot: every entity cached) and `tidemark serve` over HTTP (a server without cache and
one with), and through Feast's `get_online_features` (it has no cache), `--runs`
interleaved runs, medians of their percentiles. Regression: a newer value, then an older
one (a replay, a late duplicate) through each write path; what is served. Freshness: a
worker fed `--rate` events/s over the entities while a reader polls 200 of them; the time
from an event's time to the moment a reader first sees its value. Writes
bench/results/features.json and features.md; needs `make services` and bench/.venv-feast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from confluent_kafka import Producer
from pymongo import AsyncMongoClient, MongoClient

from bench.run import create_topics
from tidemark.config import load_topology
from tidemark.features import FeatureClient
from tidemark.features.materialize import FeatureWriter
from tidemark.features.registry import register
from tidemark.features.validation import Row

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config/examples/user-features.yaml"
FEAST = ROOT / "bench/.venv-feast/bin/python"
GROUP = "user_activity"
WARMUP = 20


def percentiles(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
    }


def topology_file(folder: Path, uri: str, database: str, **changes: Any) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["mongo"] = {"uri": uri, "database": database}
    doc.update(changes)
    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def materialize(path: Path, entities: int) -> tuple[float, dict[str, Any]]:
    """Write `entities` rows through Tidemark's write path; seconds, and the regression
    demo (a newer row, then an older one, for u0)."""
    topology = load_topology(path, env={})
    assert topology.feature_group is not None
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(topology.mongo.uri)
    try:
        db = client[topology.mongo.database]
        await register(db, topology)
        writer = FeatureWriter(db, topology.feature_group)
        now = int(time.time() * 1000)
        rows = [[_row(f"u{i}", i, now, i)] for i in range(entities)]
        start = time.perf_counter()
        await writer.write(rows)
        seconds = time.perf_counter() - start
        await writer.write([[_row("u0", 100, now + 1000, entities)]])
        older = await writer.write([[_row("u0", 1, now - 3_600_000, entities + 1)]])
    finally:
        await client.close()
    with FeatureClient(topology.mongo.uri, topology.mongo.database, cache_ttl=0) as reader:
        [served] = reader.get(GROUP, "u0")
    demo = {
        "newer_written": 100,
        "older_written_after": 1,
        "served": served.values["clicks_1h"],
        "regressed": served.values["clicks_1h"] == 1,
        "older_refused_as_stale": older.stale,
    }
    return seconds, demo


def _row(entity: str, clicks: int, t: int, offset: int) -> Row:
    values = {"clicks_1h": clicks, "spend_1h": clicks * 1.5, "last_country": "DE"}
    return Row(entity, values, t, 0, offset)


def timed(
    call: Callable[[list[str]], object], ids: list[str], batch: int, reads: int
) -> list[float]:
    """Latencies (ms) of `reads` calls for `batch` random entities each, after a warm-up."""
    rng = random.Random(batch)
    latencies = []
    for i in range(WARMUP + reads):
        sample = rng.sample(ids, batch)
        start = time.perf_counter()
        call(sample)
        if i >= WARMUP:
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def in_process(uri: str, database: str, ids: list[str], reads: int) -> dict[str, list[float]]:
    found = {}
    with FeatureClient(uri, database, cache_ttl=0) as cold:
        for batch in (1, 100):
            found[f"client cold {batch}"] = timed(lambda e: cold.get(GROUP, e), ids, batch, reads)
    with FeatureClient(uri, database, cache_ttl=3600, cache_entries=len(ids)) as hot:
        hot.get(GROUP, ids[:1000])
        for start in range(1000, len(ids), 1000):
            hot.get(GROUP, ids[start : start + 1000])
        for batch in (1, 100):
            found[f"client hot {batch}"] = timed(lambda e: hot.get(GROUP, e), ids, batch, reads)
    return found


@contextlib.contextmanager
def serving(path: Path, cache_ttl: float, log: Path) -> Iterator[httpx.Client]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "tidemark", "serve", str(path)),
                *("--port", str(port), "--cache-ttl", str(cache_ttl)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"tidemark serve did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield client
    finally:
        server.terminate()
        server.wait(10)


def over_http(path: Path, ids: list[str], reads: int, folder: Path) -> dict[str, list[float]]:
    found = {}
    for label, ttl in (("cold", 0.0), ("hot", 3600.0)):
        with serving(path, ttl, folder / f"serve-{label}.log") as http:

            def one(e: list[str], http: httpx.Client = http) -> None:
                assert http.get(f"/features/{GROUP}/{e[0]}").status_code == 200

            def batch(e: list[str], http: httpx.Client = http) -> None:
                assert http.post(f"/features/{GROUP}/batch", json={"entities": e}).is_success

            if label == "hot":  # every entity in the server's cache first
                for start in range(0, len(ids), 1000):
                    http.post(
                        f"/features/{GROUP}/batch", json={"entities": ids[start : start + 1000]}
                    )
            found[f"http {label} 1"] = timed(one, ids, 1, reads)
            found[f"http {label} 100"] = timed(batch, ids, 100, reads)
    return found


def feast(uri: str, entities: int, reads: int, folder: Path) -> dict[str, Any]:
    out = folder / "feast.json"
    database = "bench_feast"
    subprocess.run(
        [
            *(str(FEAST), str(ROOT / "bench/feast_side.py"), "--mongo-uri", uri),
            *("--database", database, "--entities", str(entities), "--reads", str(reads)),
            *("--out", str(out)),
        ],
        check=True,
        cwd=ROOT,
    )
    MongoClient(uri).drop_database(database)
    return dict(json.loads(out.read_text()))


def freshness(
    uri: str, bootstrap: str, rate: int, seconds: float, entities: int, folder: Path
) -> dict[str, Any]:
    """A worker fed `rate` events/s; a reader polls 50 entities every 100 ms and records,
    for each new event time it sees, how long after that event time it saw it.

    The topology is the example's without its window (per-user totals: the example's
    tumbling window costs the worker more CPU per event than this machine has beside the
    producer, reader, broker and server) and without history (one more document per row).
    """
    database, topic = "bench_freshness", f"bench-features-{int(time.time())}"
    MongoClient(uri).drop_database(database)
    create_topics(bootstrap, [topic])
    path = topology_file(
        folder,
        uri,
        database,
        name=f"bench-freshness-{int(time.time())}",
        kafka={"bootstrap_servers": bootstrap},
        source={"topic": topic, "format": "json", "key": "user_id"},
    )
    doc = yaml.safe_load(path.read_text())
    aggregate = doc["pipeline"][0]["aggregate"]
    del aggregate["window"], aggregate["emit"], doc["sink"]["features"]["history"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ids = [f"u{i}" for i in range(entities)]
    probes = ids[:: max(1, entities // 50)][:50]
    worker = subprocess.Popen(
        [sys.executable, "-m", "tidemark", "run", str(path)],
        stdout=(folder / "freshness-worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    lags: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        seen: dict[str, int] = {}
        with FeatureClient(uri, database, cache_ttl=0) as reader:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    now = time.time() * 1000
                    for v in reader.get(GROUP, probes):
                        if v.event_time is not None and v.event_time > seen.get(v.entity, 0):
                            if v.entity in seen:  # the first sight may be of an old value
                                lags.append((now - v.event_time) / 1000)
                            seen[v.entity] = v.event_time
                time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    try:
        time.sleep(3)  # the worker joins the group
        poller.start()
        sent = produce_at(bootstrap, topic, rate, seconds, ids)
        time.sleep(5)  # the last commits
    finally:
        stop.set()
        poller.join(10)
        worker.terminate()
        worker.wait(60)
    MongoClient(uri).drop_database(database)
    ordered = sorted(lags)
    return {
        "rate": rate,
        "entities": entities,
        "sent": sent,
        "seconds": seconds,
        "observations": len(ordered),
        "p50_s": round(statistics.median(ordered), 3) if ordered else None,
        "p99_s": round(ordered[int(len(ordered) * 0.99)], 3) if ordered else None,
        "max_s": round(ordered[-1], 3) if ordered else None,
    }


def produce_at(bootstrap: str, topic: str, rate: int, seconds: float, ids: list[str]) -> int:
    """About `rate` clicks a second for `seconds`, each stamped with its send time."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = random.Random(7)
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            user = rng.choice(ids)
            click = {
                "user_id": user,
                "amount": rng.randint(1, 9),
                "country": "NL",
                "ts": int(time.time() * 1000),
            }
            producer.produce(topic, orjson.dumps(click), user.encode())
        sent += max(0, due)
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--fresh-entities", default="1000,10000", help="entity counts of the freshness runs"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    uri, bootstrap = os.environ["MONGO_URI"], os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    ids = [f"u{i}" for i in range(args.entities)]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        folder = Path(tmp)
        path = topology_file(folder, uri, "bench_features")
        for run in range(args.runs):
            MongoClient(uri).drop_database("bench_features")
            write_s, ours = asyncio.run(materialize(path, args.entities))
            reads = in_process(uri, "bench_features", ids, args.reads)
            reads |= over_http(path, ids, args.reads, folder)
            theirs = feast(uri, args.entities, args.reads, folder)
            reads["feast 1"], reads["feast 100"] = theirs["read_1_ms"], theirs["read_100_ms"]
            runs.append(
                {
                    "run": run,
                    "write_seconds": {"tidemark": write_s, "feast": theirs["write_seconds"]},
                    "reads": {k: percentiles(v) for k, v in reads.items()},
                    "regression": {"tidemark": ours, "feast": theirs["regression"]},
                    "feast_version": theirs["feast_version"],
                }
            )
            print(f"run {run}: " + json.dumps(runs[-1]["reads"]), flush=True)
        MongoClient(uri).drop_database("bench_features")
        fresh = [
            freshness(uri, bootstrap, args.rate, args.seconds, int(n), folder)
            for n in args.fresh_entities.split(",")
        ]
    result = {
        "entities": args.entities,
        "reads_per_cell": args.reads,
        "runs": runs,
        "freshness": fresh,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "features.json").write_text(json.dumps(result, indent=2))
    (args.results / "features.md").write_text(report(result))
    print(report(result))
    return 0


def report(result: dict[str, Any]) -> str:
    runs = result["runs"]
    cells = runs[0]["reads"].keys()
    lines = [
        f"# Feature store: {result['entities']:,} entities, {result['reads_per_cell']} reads per "
        f"cell, median of {len(runs)} interleaved runs (Feast {runs[0]['feast_version']})",
        "",
        "| path | p50 ms | p99 ms |",
        "|---|---:|---:|",
    ]
    for cell in cells:
        p50 = statistics.median(r["reads"][cell]["p50"] for r in runs)
        p99 = statistics.median(r["reads"][cell]["p99"] for r in runs)
        lines.append(f"| {cell} | {p50:.2f} | {p99:.2f} |")
    writes = {
        k: statistics.median(r["write_seconds"][k] for r in runs) for k in ("tidemark", "feast")
    }
    regression = runs[0]["regression"]
    lines += [
        "",
        f"Writing the {result['entities']:,} entities: Tidemark {writes['tidemark']:.2f} s, "
        f"Feast {writes['feast']:.2f} s.",
        "",
        "A newer value, then an older one for the same entity (a replay, a late duplicate): "
        f"Tidemark serves {regression['tidemark']['served']} (regressed: "
        f"{regression['tidemark']['regressed']}); Feast serves {regression['feast']['served']} "
        f"(regressed: {regression['feast']['regressed']}).",
        "",
    ]
    for f in result["freshness"]:
        lines += [
            f"Freshness at {f['rate']:,} events/s over {f['entities']:,} entities for "
            f"{f['seconds']:.0f} s ({f['observations']:,} observations): p50 {f['p50_s']} s, "
            f"p99 {f['p99_s']} s, max {f['max_s']} s.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
