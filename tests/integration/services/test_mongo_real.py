"""The MongoDB-protocol server supports every operation the state layer relies on."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymongo import AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tests.support import Services

pytestmark = pytest.mark.integration

Db = AsyncDatabase[dict[str, object]]


async def test_upsert_and_inc_returns_new_document(mongo_db: Db) -> None:
    coll = mongo_db["checkpoints"]
    await coll.update_one({"_id": "p0"}, {"$set": {"offset": 5}}, upsert=True)
    doc = await coll.find_one_and_update(
        {"_id": "p0"}, {"$inc": {"epoch": 1}}, return_document=ReturnDocument.AFTER
    )
    assert doc == {"_id": "p0", "offset": 5, "epoch": 1}
    doc = await coll.find_one_and_update(
        {"_id": "p0"}, {"$inc": {"epoch": 1}}, return_document=ReturnDocument.AFTER
    )
    assert doc is not None and doc["epoch"] == 2


async def test_conditional_update_with_stale_epoch_matches_nothing(mongo_db: Db) -> None:
    coll = mongo_db["checkpoints"]
    await coll.insert_one({"_id": "p0", "epoch": 3, "offset": 10})
    result = await coll.update_one({"_id": "p0", "epoch": 2}, {"$set": {"offset": 99}})
    assert result.matched_count == 0
    assert (await coll.find_one({"_id": "p0"})) == {"_id": "p0", "epoch": 3, "offset": 10}


async def test_unordered_bulk_upserts(mongo_db: Db) -> None:
    coll = mongo_db["state"]
    n = 2000
    ops = [UpdateOne({"_id": f"k{i}"}, {"$set": {"v": i}}, upsert=True) for i in range(n)]
    started = time.perf_counter()
    result = await coll.bulk_write(ops, ordered=False)
    elapsed = time.perf_counter() - started
    print(f"bulk upsert: {n} docs in {elapsed:.3f}s = {n / elapsed:,.0f}/s")
    assert result.upserted_count == n
    assert await coll.count_documents({}) == n
    assert (await coll.find_one({"_id": "k1234"})) == {"_id": "k1234", "v": 1234}


async def test_conditional_upsert_colliding_with_existing_id_is_duplicate_key(
    mongo_db: Db,
) -> None:
    coll = mongo_db["state"]
    await coll.insert_one({"_id": "k", "ep": 5, "v": 1})
    # A writer with epoch 4 conditions on its epoch; the filter misses, the upsert tries to
    # insert the same _id and collides: that is how a fenced state write surfaces.
    with pytest.raises(DuplicateKeyError):
        await coll.update_one({"_id": "k", "ep": 4}, {"$set": {"v": 2}}, upsert=True)
    # The state flush sends raw `update` commands (see state/flush.py for why not bulk_write):
    # a fenced statement comes back as a write error with code 11000 that the caller can read.
    # MongoDB applies every other statement of an unordered command; FerretDB 1.x stops at the
    # first failure. Only what both servers guarantee is asserted.
    reply = await mongo_db.command(
        {
            "update": "state",
            "updates": [
                {"q": {"_id": "a"}, "u": {"$set": {"v": 1}}, "upsert": True},
                {"q": {"_id": "k", "ep": 4}, "u": {"$set": {"v": 2}}, "upsert": True},
            ],
            "ordered": False,
        }
    )
    assert [e["code"] for e in reply["writeErrors"]] == [11000]
    assert (await coll.find_one({"_id": "k"})) == {"_id": "k", "ep": 5, "v": 1}
    assert (await coll.find_one({"_id": "a"})) == {"_id": "a", "v": 1}


async def test_unique_index_rejects_duplicates(mongo_db: Db) -> None:
    coll = mongo_db["snapshots"]
    await coll.create_index([("partition", 1), ("version", 1)], unique=True)
    await coll.insert_one({"partition": 0, "version": 1})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"partition": 0, "version": 1})
    await coll.insert_one({"partition": 0, "version": 2})
    assert await coll.count_documents({"partition": 0}) == 2


async def test_concurrent_updates_of_one_document_are_not_lost(
    mongo_db: Db, services: Services
) -> None:
    """An owner's checkpoint move and an operator's mark may hit one document at once."""
    other: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(services.mongo_uri)
    try:
        coll, same = mongo_db["checkpoints"], other[mongo_db.name]["checkpoints"]
        await coll.insert_one({"_id": "p0", "epoch": 0, "seen": 0})

        async def bump() -> None:
            for _ in range(200):
                await coll.update_one({"_id": "p0"}, {"$inc": {"epoch": 1}})

        async def stamp() -> None:
            for i in range(200):
                await same.update_many({"_id": {"$in": ["p0", "p1"]}}, {"$set": {"seen": i}})

        await asyncio.gather(bump(), stamp())
        assert await coll.find_one({"_id": "p0"}) == {"_id": "p0", "epoch": 200, "seen": 199}
    finally:
        await other.close()
