"""Checkpoint documents: the next offset to read per partition, guarded by an owner epoch.

Taking a partition increments its epoch atomically; every later write of the owner is
conditional on that epoch, so a zombie (an old owner after a GC pause or a network split)
is refused and learns it must stop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from state.errors import Fenced
from state.names import CHECKPOINTS, checkpoint_id
from state.retry import with_retry

Status = Literal["running", "failed", "replaying"]


@dataclass(frozen=True)
class Checkpoint:
    """One partition's progress as its owner sees it."""

    id: str
    topic: str
    partition: int
    offset: int | None  # next offset to read; None: nothing checkpointed yet
    epoch: int
    status: Status
    error: str | None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Checkpoint:
        return cls(
            id=doc["_id"],
            topic=doc["topic"],
            partition=doc["partition"],
            offset=doc.get("offset"),
            epoch=doc.get("epoch", 0),
            status=doc.get("status", "running"),
            error=doc.get("error"),
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Checkpoints:
    """The `checkpoints` collection, for one topology."""

    def __init__(self, db: AsyncDatabase[Any], topology: str) -> None:
        self._coll = db[CHECKPOINTS]
        self._topology = topology

    async def acquire(self, topic: str, partition: int, owner: str) -> Checkpoint:
        """Take ownership: bump the epoch and return the checkpoint as the new owner."""
        cid = checkpoint_id(self._topology, topic, partition)
        doc = await with_retry(
            lambda: self._coll.find_one_and_update(
                {"_id": cid},
                {
                    "$inc": {"epoch": 1},
                    "$set": {"owner": owner, "updated_at": _now()},
                    "$setOnInsert": {
                        "topology": self._topology,
                        "topic": topic,
                        "partition": partition,
                        "offset": None,
                        "status": "running",
                    },
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        )
        assert doc is not None
        return Checkpoint.from_doc(doc)

    async def get(self, topic: str, partition: int) -> Checkpoint | None:
        """The checkpoint as stored, or None."""
        doc = await self._coll.find_one({"_id": checkpoint_id(self._topology, topic, partition)})
        return Checkpoint.from_doc(doc) if doc else None

    async def advance(self, cp: Checkpoint, offset: int) -> Checkpoint:
        """Move to `offset` (next to read); `Fenced` if the epoch moved on."""
        await self._conditional(cp, {"offset": offset})
        return Checkpoint(cp.id, cp.topic, cp.partition, offset, cp.epoch, cp.status, cp.error)

    async def mark_failed(self, cp: Checkpoint, offset: int, error: str) -> Checkpoint:
        """Record that the partition stopped on repeated failures, with the last error."""
        await self._conditional(cp, {"offset": offset, "status": "failed", "error": error})
        return Checkpoint(cp.id, cp.topic, cp.partition, offset, cp.epoch, "failed", error)

    async def epochs(self, ids: list[str]) -> dict[str, int]:
        """Current epoch of each checkpoint id, with one query."""
        docs = await with_retry(
            lambda: self._coll.find({"_id": {"$in": ids}}, {"epoch": 1}).to_list(None)
        )
        return {doc["_id"]: doc.get("epoch", 0) for doc in docs}

    async def _conditional(self, cp: Checkpoint, fields: dict[str, Any]) -> None:
        result = await with_retry(
            lambda: self._coll.update_one(
                {"_id": cp.id, "epoch": cp.epoch},
                {"$set": {**fields, "updated_at": _now()}},
            )
        )
        if result.matched_count == 0:
            raise Fenced(f"checkpoint {cp.id}", cp.epoch)
