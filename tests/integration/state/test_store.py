"""Partition state store and checkpoints against the real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config.state import NotPrefetched, Table
from tidemark.operators import Stamped
from tidemark.state import Checkpoints, Fenced, PartitionStore, ensure_collections
from tidemark.state.names import state_collection

pytestmark = pytest.mark.integration
Db = AsyncDatabase[dict[str, Any]]


async def store(db: Db, partition: int = 0, **kw: int) -> PartitionStore:
    await ensure_collections(db, "t")
    return PartitionStore(db[state_collection("t")], partition, **kw)


async def test_put_flush_and_read_back_through_a_fresh_store(mongo_db: Db) -> None:
    s = await store(mongo_db, flush_statements=3)
    await s.prefetch("agg", ["a", "b"])
    assert s.get("agg", "a") is None
    for i in range(10):
        s.put("agg", f"k{i}", {"n": i}, 100 + i)
    s.put("agg", "k1", {"n": 11}, 120)  # coalesced: one write per key
    assert s.dirty_count == 10
    assert len(list(await s.flush(epoch=1))) == 10
    assert s.dirty_count == 0

    fresh = await store(mongo_db)
    await fresh.prefetch("agg", ["k1", "k9", "missing"])
    assert fresh.get("agg", "k1") == Stamped({"n": 11}, 120)
    assert fresh.get("agg", "k9") == Stamped({"n": 9}, 109)
    assert fresh.get("agg", "missing") is None
    doc = await mongo_db[state_collection("t")].find_one({"_id": "agg:0:k1"})
    assert doc is not None
    assert (doc["op"], doc["k"], doc["p"], doc["off"], doc["ep"], doc["del"]) == (
        "agg",
        "k1",
        0,
        120,
        1,
        False,
    )


async def test_reading_an_unprefetched_key_is_a_bug_not_a_miss(mongo_db: Db) -> None:
    s = await store(mongo_db)
    with pytest.raises(NotPrefetched, match="before it was prefetched"):
        s.get("agg", "never")


async def test_cache_is_bounded_and_evicted_keys_reload(mongo_db: Db) -> None:
    s = await store(mongo_db, cache_entries=5)
    keys = [f"k{i}" for i in range(20)]
    await s.prefetch("agg", keys)
    for i, k in enumerate(keys):
        s.put("agg", k, i, i)
    await s.flush(1)
    await s.prefetch("agg", ["k0"])  # trims to the bound before loading
    assert s.cached_count <= 6
    assert s.get("agg", "k0") == Stamped(0, 0)


@dataclass
class _Entry:
    value: Any
    offset: int
    owned: bool = True


def _change(table: Table, key: str, value: Any, offset: int) -> None:
    """What the direct path's fold does to a table (`operators/_direct.c`)."""
    table.entries[key] = _Entry(value, offset)
    table.dirty.add(key)


async def test_a_table_is_flushed_and_what_it_drops_is_read_back_as_flushed(mongo_db: Db) -> None:
    s = await store(mongo_db, cache_entries=1)
    table = s.table("agg")
    assert await s.read("agg", ["a", "b"]) == {}  # absent: remembered by no one
    _change(table, "a", {"n": 1}, 10)
    _change(table, "b", {"n": 2}, 11)
    assert s.dirty_count == 2
    assert sorted(await s.flush(epoch=1), key=lambda record: record[1]) == [
        ("agg", "a", {"n": 1}, 10),  # what the changelog gets
        ("agg", "b", {"n": 2}, 11),
    ]
    assert s.dirty_count == 0
    assert not any(entry.owned for entry in table.entries.values())  # the flush holds them
    _change(table, "a", {"n": 3}, 12)
    await s.flush(epoch=1)  # over the bound: drops "b", unchanged since the last flush
    assert list(table.entries) == ["a"]
    # Not the absent keys of the first read: the store cached nothing of the table's.
    assert await s.read("agg", ["a", "b"]) == {
        "a": Stamped({"n": 3}, 12),
        "b": Stamped({"n": 2}, 11),
    }
    _change(table, "a", {"n": 4}, 13)
    s.forget()
    assert (table.entries, table.dirty, s.dirty_count) == ({}, set(), 0)


async def test_older_epoch_flush_is_fenced_and_changes_nothing(mongo_db: Db) -> None:
    old, new = await store(mongo_db), await store(mongo_db)
    await new.prefetch("agg", ["k"])
    new.put("agg", "k", "new", 5)
    await new.flush(epoch=2)
    await old.prefetch("agg", ["k"])
    old.put("agg", "k", "stale", 9)
    with pytest.raises(Fenced):
        await old.flush(epoch=1)
    doc = await mongo_db[state_collection("t")].find_one({"_id": "agg:0:k"})
    assert doc is not None
    assert (doc["v"], doc["ep"], doc["off"]) == ("new", 2, 5)


async def test_tombstones_are_swept_once_the_checkpoint_passes(mongo_db: Db) -> None:
    s = await store(mongo_db)
    await s.prefetch("agg", ["gone", "kept"])
    s.view("agg").delete("gone", 10)
    s.put("agg", "kept", 1, 11)
    await s.flush(1)
    assert s.tombstones == 1
    assert await s.sweep_tombstones(epoch=1, below=10) == 0
    assert await s.sweep_tombstones(epoch=1, below=11) == 1
    ids = [d["_id"] async for d in mongo_db[state_collection("t")].find({})]
    assert ids == ["agg:0:kept"]


async def test_a_sweep_keeps_a_key_written_again_since_its_delete(mongo_db: Db) -> None:
    s = await store(mongo_db)
    await s.prefetch("agg", ["k"])
    s.view("agg").delete("k", 10)
    await s.flush(1)
    s.put("agg", "k", "back", 12)
    await s.flush(1)
    assert await s.sweep_tombstones(epoch=1, below=20) == 0
    doc = await mongo_db[state_collection("t")].find_one({"_id": "agg:0:k"})
    assert doc is not None and doc["v"] == "back"


async def test_a_sweep_of_more_tombstones_than_sqlite_binds_removes_them_all(
    mongo_db: Db,
) -> None:
    # One checkpoint that closed many windows: FerretDB on SQLite refuses one delete of more
    # than 32,766 documents, and the worker died on it before sweeps went in batches.
    s = await store(mongo_db)
    n = 33_000
    keys = [f"k{i}" for i in range(n)]
    for start in range(0, n, 10_000):  # each `$in` below SQLite's limit too
        await s.prefetch("w", keys[start : start + 10_000])
    for i, key in enumerate(keys):
        s.view("w").delete(key, i)
    s.put("w", "alive", 1, 2 * n)
    await s.flush(1)
    assert s.tombstones == n
    assert await s.sweep_tombstones(epoch=1, below=3 * n) == n
    coll = mongo_db[state_collection("t")]
    assert [d["_id"] async for d in coll.find({})] == ["w:0:alive"]
    assert s.tombstones == 0


async def test_checkpoint_epochs_fence_the_previous_owner(mongo_db: Db) -> None:
    cps = Checkpoints(mongo_db, "t")
    first = await cps.acquire("in", 0, "w1")
    assert first is not None
    assert (first.epoch, first.offset, first.status) == (1, None, "running")
    await cps.advance(first, 50)
    second = await cps.acquire("in", 0, "w2")
    assert second is not None
    assert (second.epoch, second.offset) == (2, 50)
    with pytest.raises(Fenced):
        await cps.advance(first, 99)
    with pytest.raises(Fenced):
        await cps.mark_failed(first, 99, "boom")
    stored = await cps.get("in", 0)
    assert stored is not None
    assert (stored.offset, stored.epoch, stored.status) == (50, 2, "running")
    current = await cps.current([second.id, "absent"])
    assert list(current) == [second.id]
    assert current[second.id].epoch == 2


async def test_failed_status_survives_a_new_owner(mongo_db: Db) -> None:
    cps = Checkpoints(mongo_db, "t")
    cp = await cps.acquire("in", 1, "w1")
    assert cp is not None
    await cps.mark_failed(cp, 7, "RecordError: bad")
    again = await cps.acquire("in", 1, "w2")
    assert again is not None
    assert (again.status, again.error, again.offset) == ("failed", "RecordError: bad", 7)


async def test_acquire_never_returns_an_epoch_it_did_not_bump(mongo_db: Db) -> None:
    """A held partition is refused (None), and every checkpoint returned carries an epoch
    that no other `acquire` returned, even when a hand-off ends between acquire's reads."""
    cps = Checkpoints(mongo_db, "t")
    first = await cps.acquire("in", 2, "w1")
    assert first is not None
    marked = await cps.begin_handoff("in", 2, "replaying", "op")
    assert await cps.acquire("in", 2, "w2") is None, "held: a group member leaves it alone"
    taken = await cps.acquire("in", 2, "op", handoff=marked.handoff)
    assert taken is not None and taken.epoch == first.epoch + 1

    async def racer(owner: str) -> int | None:
        cp = await cps.acquire("in", 2, owner)
        return cp.epoch if cp is not None else None

    # The hand-off ends while eight members race to acquire: each epoch is bumped by its taker.
    racing = [asyncio.create_task(racer(f"w{i}")) for i in range(8)]
    await cps.end_handoff(taken, "running")
    epochs = [e for e in await asyncio.gather(*racing) if e is not None]
    later = [e for e in epochs if e > taken.epoch]
    assert len(later) == len(set(later)), f"two owners were given one epoch: {epochs}"
    stored = await cps.get("in", 2)
    assert stored is not None and stored.epoch == taken.epoch + len(later)


async def test_clean_is_read_and_reset_by_the_next_owner(mongo_db: Db) -> None:
    cps = Checkpoints(mongo_db, "t")
    cp = await cps.acquire("in", 3, "w1")
    assert cp is not None and not cp.clean
    await cps.mark_clean(cp)
    again = await cps.acquire("in", 3, "w2")
    assert again is not None and again.clean, "the last owner left its state complete at W"
    third = await cps.acquire("in", 3, "w3")
    assert third is not None and not third.clean, "w2 may have crashed mid-flush"
