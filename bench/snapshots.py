"""Snapshot and restore times by state size, and how long a snapshot stalls processing.

For each size: fill one partition's state with N keys as a worker writes them, then
time a full snapshot, a verification and a restore, `--runs` times. While the snapshot
runs, a ticker coroutine on the same event loop records the longest gap between its
ticks: that is how long processing, which shares the loop, could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from tidemark.state.names import state_collection
from tidemark.state.snapshots import Snapshots
from tidemark.state.store import delete_matching

RESULTS = Path(__file__).resolve().parent / "results"
TOPOLOGY = "bench-snapshots"


async def _listed(version: int) -> None:
    """Nothing to fence in a benchmark: every version is listed."""


async def _fill(db: Any, keys: int) -> None:
    coll = db[state_collection(TOPOLOGY)]
    await coll.drop()
    now = dt.datetime.now(dt.UTC)
    batch = []
    for i in range(keys):
        value = {"count": i % 97 + 1, "total": (i * 7) % 1000}
        batch.append(
            {
                "_id": f"agg:0:user-{i}",
                **{"op": "agg", "k": f"user-{i}", "p": 0, "v": value, "off": i},
                **{"ep": 1, "ts": now, "del": False},
            }
        )
        if len(batch) == 10_000:
            await coll.insert_many(batch, ordered=False)
            batch = []
    if batch:
        await coll.insert_many(batch, ordered=False)
    await coll.create_index([("p", 1)])


async def _server_bounds(db: Any, keys: int) -> dict[str, float]:
    """What the MongoDB server itself takes for the work a snapshot and a restore cannot
    avoid, measured alone: inserting the partition's documents, reading them all back, and
    deleting them (a restore clears, then inserts; a snapshot reads)."""
    coll = db[state_collection(TOPOLOGY)]
    started = time.perf_counter()
    await _fill(db, keys)
    insert = time.perf_counter() - started
    started = time.perf_counter()
    read = 0
    async for _ in coll.find({"p": 0}, {"op": 1, "k": 1, "v": 1, "off": 1}, batch_size=10_000):
        read += 1
    scan = time.perf_counter() - started
    assert read == keys, f"read {read} of {keys}"
    started = time.perf_counter()
    await delete_matching(coll, {"p": 0})
    delete = time.perf_counter() - started
    return {"server_insert_s": insert, "server_scan_s": scan, "server_delete_s": delete}


TICK = 0.005


async def _longest_stall(stop: asyncio.Event) -> float:
    """How much later than asked the loop woke a sleeper, at worst. A tick that slept 0 would
    spin a core, the server's, and slow the very snapshot it watches."""
    longest = 0.0
    while not stop.is_set():
        asked = time.perf_counter() + TICK
        await asyncio.sleep(TICK)
        longest = max(longest, time.perf_counter() - asked)
    return longest


async def measure(uri: str, keys: int, runs: int) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client["bench_snapshots"]
    try:
        bounds = await _server_bounds(db, keys)
        await _fill(db, keys)
        snaps = Snapshots(db, TOPOLOGY)
        take, verify, restore, stalls = [], [], [], []
        manifest = None
        for _ in range(runs):
            stop = asyncio.Event()
            ticker = asyncio.create_task(_longest_stall(stop))
            started = time.perf_counter()
            manifest = await snaps.take(0, keys, "bench", _listed)
            take.append(time.perf_counter() - started)
            stop.set()
            stalls.append(await ticker)
            started = time.perf_counter()
            await snaps.verify(manifest)
            verify.append(time.perf_counter() - started)
            started = time.perf_counter()
            restored = await snaps.restore(manifest, epoch=2)
            restore.append(time.perf_counter() - started)
            assert restored == keys, f"restored {restored} of {keys}"
        assert manifest is not None
        return {
            "keys": keys,
            "runs": runs,
            "take_s": statistics.median(take),
            "verify_s": statistics.median(verify),
            "restore_s": statistics.median(restore),
            "longest_loop_stall_ms": statistics.median(stalls) * 1000,
            "bytes": manifest.bytes,
            "chunks": manifest.chunks,
            **bounds,
        }
    finally:
        await client.drop_database("bench_snapshots")
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", default="100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    uri = os.environ["MONGO_URI"]
    results = []
    for keys in map(int, args.keys.split(",")):
        result = asyncio.run(measure(uri, keys, args.runs))
        print(
            f"snapshot {keys:>9,} keys: take {result['take_s']:.1f}s, verify "
            f"{result['verify_s']:.1f}s, restore {result['restore_s']:.1f}s, longest loop stall "
            f"{result['longest_loop_stall_ms']:.0f}ms, {result['bytes'] / 1e6:.1f} MB in "
            f"{result['chunks']} chunks; the server alone: insert "
            f"{result['server_insert_s']:.1f}s, scan {result['server_scan_s']:.1f}s, delete "
            f"{result['server_delete_s']:.1f}s",
            flush=True,
        )
        results.append(result)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "snapshots.json"
    # Sizes measured in other invocations stay: big sizes are worth fewer runs.
    earlier = json.loads(path.read_text()) if path.exists() else []
    measured = {r["keys"] for r in results}
    merged = [r for r in earlier if r["keys"] not in measured] + results
    path.write_text(json.dumps(sorted(merged, key=lambda r: r["keys"]), indent=2))


if __name__ == "__main__":
    main()
