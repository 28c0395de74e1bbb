"""Snapshots and the changelog against the real MongoDB-protocol server."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config.state import Stamped
from tidemark.state import Checkpoints, Fenced, PartitionStore, ensure_collections
from tidemark.state.chunks import CHUNKS, CorruptPayload, write_payload
from tidemark.state.names import state_collection
from tidemark.state.snapshots import Snapshots

pytestmark = pytest.mark.integration
Db = AsyncDatabase[dict[str, Any]]


async def listed(version: int) -> None:
    """The `publish` of a writer that holds its epoch: nothing to check here."""


async def fill(db: Db, values: dict[str, int], offset: int, partition: int = 0) -> None:
    """Write `values` as operator `agg`'s state, stamped with `offset`, like a worker flush."""
    await ensure_collections(db, "t")
    store = PartitionStore(db[state_collection("t")], partition)
    await store.prefetch("agg", list(values))
    for key, value in values.items():
        store.put("agg", key, {"n": value}, offset)
    await store.flush(1)


async def stored(db: Db, partition: int = 0) -> dict[str, Any]:
    docs = await db[state_collection("t")].find({"p": partition}).to_list(None)
    return {d["k"]: (d["v"], d["off"]) for d in docs}


async def test_versions_count_up_and_restore_brings_back_the_cut(mongo_db: Db) -> None:
    snaps = Snapshots(mongo_db, "t", chunk_bytes=1024)  # small chunks: many per payload
    first = {f"user-{i}": i for i in range(3000)}
    await fill(mongo_db, first, offset=10)
    await fill(mongo_db, {"other-partition": 1}, offset=10, partition=1)
    v1 = await snaps.take(0, 11, "hash-a", listed)
    await fill(mongo_db, {"user-1": 999, "new": 5}, offset=20)
    v2 = await snaps.take(0, 21, "hash-a", listed)

    assert [m.version for m in await snaps.versions(0)] == [1, 2]
    assert (v1.offset, v1.keys, v1.topology_hash, v1.kind) == (11, 3000, "hash-a", "full")
    assert v1.chunks > 3 and v1.bytes > 0 and v1.created_at.tzinfo is not None
    assert v2.keys == 3001

    restored = await snaps.restore(await snaps.get(0, 1), epoch=7)
    assert restored == 3000
    now = await stored(mongo_db)
    assert now == {k: ({"n": v}, 10) for k, v in first.items()}
    assert await stored(mongo_db, partition=1) == {"other-partition": ({"n": 1}, 10)}
    eps = await mongo_db[state_collection("t")].distinct("ep", {"p": 0})
    assert eps == [7], "restored keys carry the restorer's epoch"


async def test_a_corrupt_chunk_is_refused_before_anything_changes(mongo_db: Db) -> None:
    snaps = Snapshots(mongo_db, "t", chunk_bytes=1024)
    await fill(mongo_db, {f"k{i}": i for i in range(2000)}, offset=5)
    manifest = await snaps.take(0, 6, "h", listed)
    await fill(mongo_db, {"k1": -1}, offset=9)
    before = await stored(mongo_db)
    chunk = await mongo_db[CHUNKS].find_one({"owner": manifest.id, "n": 2})
    assert chunk is not None
    data = bytearray(chunk["data"])
    data[len(data) // 2] ^= 0xFF
    await mongo_db[CHUNKS].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})

    with pytest.raises(CorruptPayload, match="chunk 2 does not match its checksum"):
        await snaps.restore(manifest, epoch=3)
    assert await stored(mongo_db) == before


async def test_a_missing_chunk_is_refused(mongo_db: Db) -> None:
    snaps = Snapshots(mongo_db, "t", chunk_bytes=1024)
    await fill(mongo_db, {f"k{i}": i for i in range(2000)}, offset=5)
    manifest = await snaps.take(0, 6, "h", listed)
    await mongo_db[CHUNKS].delete_one({"owner": manifest.id, "n": 1})
    with pytest.raises(CorruptPayload, match=r"chunk 1 of \d+ is missing"):
        await snaps.verify(manifest)


async def test_retention_keeps_exactly_the_newest_n_within_max_age(mongo_db: Db) -> None:
    snaps = Snapshots(mongo_db, "t")
    await fill(mongo_db, {"a": 1}, offset=1)
    for offset in range(2, 8):
        await snaps.take(0, offset, "h", listed)  # versions 1..6
    assert await snaps.prune(0, retain=4, max_age=None) == [1, 2]
    assert [m.version for m in await snaps.versions(0)] == [3, 4, 5, 6]
    assert await mongo_db[CHUNKS].count_documents({"owner": {"$regex": ":[12]$"}}) == 0

    # Versions 3 and 4 are made old; max_age prunes them though retain would keep them.
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    for version in (3, 4):
        await mongo_db["snapshots"].update_one(
            {"_id": f"t:0:{version}"}, {"$set": {"created_at": old}}
        )
    assert await snaps.prune(0, retain=4, max_age=7 * 86400) == [3, 4]
    assert [m.version for m in await snaps.versions(0)] == [5, 6]

    # Everything too old: the newest version stays, a partition keeps a restore point.
    await mongo_db["snapshots"].update_many({}, {"$set": {"created_at": old}})
    assert await snaps.prune(0, retain=4, max_age=7 * 86400) == [5]
    assert [m.version for m in await snaps.versions(0)] == [6]
    await snaps.take(0, 9, "h", listed)
    assert [m.version for m in await snaps.versions(0)] == [6, 7], "versions never reused"


async def test_incremental_versions_are_base_plus_changelog(mongo_db: Db) -> None:
    snaps = Snapshots(mongo_db, "t")
    await fill(mongo_db, {"a": 1, "b": 2}, offset=0)
    base = await snaps.take(0, 1, "h", listed, kind="full")
    await fill(mongo_db, {"a": 10}, offset=4)
    await snaps.changelog.append(0, 1, 5, [("agg", "a", {"n": 10}, 4)])
    await fill(mongo_db, {"b": 20, "c": 3}, offset=8)
    await snaps.changelog.append(0, 5, 9, [("agg", "b", {"n": 20}, 8), ("agg", "c", {"n": 3}, 8)])
    delta = await snaps.take(0, 5, "h", listed, kind="delta")
    latest = await snaps.take(0, 9, "h", listed, kind="delta")
    assert (delta.kind, delta.base, latest.base) == ("delta", base.version, base.version)
    assert latest.keys == 3, "keys its changelog rewrites since the base"

    await snaps.restore(delta, epoch=2)
    assert await stored(mongo_db) == {"a": ({"n": 10}, 4), "b": ({"n": 2}, 0)}
    # Restoring rewrites history after the cut: later deltas and their versions go.
    assert [d.start for d in await snaps.changelog.deltas(0)] == [1]
    assert [m.version for m in await snaps.versions(0)] == [1, 2]
    again = await snaps.take(0, 5, "h", listed, kind="full")
    assert again.version == 4, "version 3 named another cut: never reused"


async def test_a_gap_in_the_changelog_is_reported_and_avoided(mongo_db: Db) -> None:
    snaps = Snapshots(mongo_db, "t")
    await fill(mongo_db, {"a": 1}, offset=0)
    await snaps.take(0, 1, "h", listed)
    await snaps.changelog.append(0, 1, 3, [("agg", "a", {"n": 2}, 2)])
    await snaps.changelog.append(0, 3, 5, [("agg", "a", {"n": 3}, 4)])
    delta = await snaps.take(0, 5, "h", listed, kind="delta")
    assert delta.kind == "delta"
    await mongo_db["changelog"].delete_one({"_id": "t:0:d1"})
    with pytest.raises(CorruptPayload, match="no delta from 1"):
        await snaps.verify(delta)
    # A delta over the gap would be unrestorable: the next version is a full base instead.
    assert (await snaps.take(0, 5, "h", listed, kind="delta")).kind == "full"


async def test_a_zombie_flush_cannot_revive_state_a_restore_deleted(mongo_db: Db) -> None:
    """The old owner (epoch 1) still has a flush in flight when an operation fenced it
    (epoch 2), cleared the partition and restored a snapshot that lacks key `b`."""
    await fill(mongo_db, {"a": 1}, offset=5)
    snaps = Snapshots(mongo_db, "t")
    manifest = await snaps.take(0, 6, "h", listed)
    await fill(mongo_db, {"b": 2}, offset=7)
    cps = Checkpoints(mongo_db, "t")
    await cps.acquire("in", 0, "w1")  # epoch 1: the owner about to become a zombie
    zombie = PartitionStore(mongo_db[state_collection("t")], 0)
    await zombie.prefetch("agg", ["a", "b", "c"])
    for key in ("a", "b", "c"):
        zombie.put("agg", key, {"n": 99}, 8)
    operator = await cps.acquire("in", 0, "replay")
    assert operator is not None
    await cps.raise_floor(operator)
    await snaps.restore(manifest, operator.epoch)

    with contextlib.suppress(Fenced):  # `a` was restored at epoch 2: the zombie is refused
        await zombie.flush(1)
    # Whatever of its flush landed is void for the next owner, who reads with the floor.
    after = await cps.acquire("in", 0, "w2")
    assert after is not None and after.floor == operator.epoch
    fresh = PartitionStore(mongo_db[state_collection("t")], 0, floor=after.floor)
    await fresh.prefetch("agg", ["a", "b", "c"])
    assert fresh.get("agg", "a") == Stamped({"n": 1}, 5)
    assert fresh.get("agg", "b") is None, "deleted by the restore; the zombie cannot revive it"
    assert fresh.get("agg", "c") is None
    # The next snapshot leaves the void documents out, and removes them.
    again = await snaps.take(0, 6, "h", listed, floor=after.floor)
    assert again.keys == 1
    assert await mongo_db[state_collection("t")].count_documents({"ep": {"$lt": 2}}) == 0


async def test_restore_overwrites_a_zombie_document_but_not_a_newer_one(mongo_db: Db) -> None:
    coll = mongo_db[state_collection("t")]
    doc = {"op": "agg", "k": "a", "p": 0, "v": {"n": 1}, "off": 5, "ts": None, "del": False}
    await coll.insert_one({"_id": "agg:0:a", **doc, "v": {"n": 99}, "ep": 1})
    snaps = Snapshots(mongo_db, "t")
    await snaps._write([{"_id": "agg:0:a", **doc, "ep": 2}], epoch=2)
    stored = await coll.find_one({"_id": "agg:0:a"})
    assert stored is not None and (stored["v"], stored["ep"]) == ({"n": 1}, 2)
    with pytest.raises(Fenced):
        await snaps._write([{"_id": "agg:0:a", **doc, "ep": 1}], epoch=1)


async def test_prune_leaves_the_chunks_of_a_snapshot_being_written(mongo_db: Db) -> None:
    """`snapshot prune` runs without a hand-off: it must not remove the payload of the
    version the owner is writing (reserved, chunks written, manifest not yet)."""
    await fill(mongo_db, {f"k{i}": i for i in range(50)}, offset=5)
    snaps = Snapshots(mongo_db, "t")
    await snaps.take(0, 6, "h", listed)
    writing = await snaps._next_version(0, await snaps.latest(0))
    owner = f"t:0:{writing}"
    await write_payload(mongo_db[CHUNKS], owner, [("agg", "x", 1, 5)], 1024)
    await snaps.prune(0, retain=1, max_age=None)
    assert await mongo_db[CHUNKS].count_documents({"owner": owner}) == 1
    # Once a newer version is reserved, a payload without a manifest is a crash's leftover.
    await snaps.take(0, 7, "h", listed)
    await snaps.prune(0, retain=1, max_age=None)
    assert await mongo_db[CHUNKS].count_documents({"owner": owner}) == 0


async def test_a_snapshot_fenced_before_it_is_published_is_never_listed(mongo_db: Db) -> None:
    """The writer lost its epoch while it read (an operator may have rewritten the state):
    its version must not become a restore point."""
    await fill(mongo_db, {"a": 1}, offset=5)
    snaps = Snapshots(mongo_db, "t")

    async def fenced(version: int) -> None:
        raise Fenced("snapshot", 1)

    with pytest.raises(Fenced):
        await snaps.take(0, 6, "h", fenced)
    assert await snaps.versions(0) == []
    assert await mongo_db[CHUNKS].count_documents({}) == 0
    assert (await snaps.take(0, 6, "h", listed)).version == 2, "versions are never reused"
