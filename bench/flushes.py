"""The MongoDB-protocol server's CPU per flushed key, by statement shape and command size.

A state flush is one epoch-conditional upsert per dirty key (`state/store.py`). This times
both a key's first flush and a later one, on the local server: the
update operators a flush used to send (`$set` and `$setOnInsert`, with a `ts` field) beside
the whole document it sends now, in commands of 200 and 1,000 statements: once to make
`--keys` documents in a collection of their own, once to change them all. The rounds
interleave the shapes.

Usage: python -m bench.flushes [--keys 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from bench.cpu import MONGO_SERVER, cpu_seconds, find

SHAPES = (("operators", 200), ("operators", 1000), ("document", 200), ("document", 1000))


def statement(i: int, shape: str, off: int) -> dict[str, Any]:
    """The upsert of key `i` at offset `off`, as a flush of epoch 1 writes it."""
    sid, key, value = f"agg:0:user-{i:07d}", f"user-{i:07d}", {"count": off, "total": 3 * off}
    query = {"_id": sid, "ep": {"$lte": 1}}
    if shape == "operators":
        update: dict[str, Any] = {
            "$setOnInsert": {"op": "agg", "k": key, "p": 0},
            "$set": {"v": value, "off": off, "ep": 1, "ts": dt.datetime.now(dt.UTC), "del": False},
        }
    else:
        update = {"op": "agg", "k": key, "p": 0, "v": value, "off": off, "ep": 1, "del": False}
    return {"q": query, "u": update, "upsert": True}


def flush(db: Database[Any], name: str, shape: str, size: int, keys: int, off: int) -> float:
    """Server CPU µs per key of one flush of every key."""
    server = find(MONGO_SERVER)
    statements = [statement(i, shape, off) for i in range(keys)]
    before = cpu_seconds(server)
    for start in range(0, keys, size):
        command = {"update": name, "updates": statements[start : start + size], "ordered": False}
        reply = db.command(command)
        assert not reply.get("writeErrors"), reply["writeErrors"][:1]
    return (cpu_seconds(server) - before) / keys * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    client: MongoClient[Any] = MongoClient(os.environ["MONGO_URI"])
    db = client[f"bench_flushes_{int(time.time())}"]
    try:
        new: dict[tuple[str, int], list[float]] = {}
        found: dict[tuple[str, int], list[float]] = {}
        for run in range(args.runs):  # each round makes its own documents, then updates them
            for shape, size in SHAPES:
                name = f"{shape}_{size}_{run}"
                new.setdefault((shape, size), []).append(flush(db, name, shape, size, args.keys, 0))
            for shape, size in SHAPES:
                name = f"{shape}_{size}_{run}"
                found.setdefault((shape, size), []).append(
                    flush(db, name, shape, size, args.keys, 1)
                )
        base_new, base = statistics.median(new[SHAPES[0]]), statistics.median(found[SHAPES[0]])
        print(f"{args.keys} keys, medians of {args.runs} rounds; server CPU µs per key")
        print("| statement | per command | new keys | ratio | existing keys | ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        for shape, size in SHAPES:
            made, changed = (
                statistics.median(new[shape, size]),
                statistics.median(found[shape, size]),
            )
            print(
                f"| {shape} | {size} | {made:.0f} | {made / base_new:.2f} "
                f"| {changed:.0f} | {changed / base:.2f} |"
            )
    finally:
        client.drop_database(db.name)
        client.close()


if __name__ == "__main__":
    main()
