"""Incremental mode's changelog: every state checkpoint's delta, compacted per key.

A delta `(start, end]` holds the value of each key that changed between two checkpoints,
once (the dirty set already coalesces writes per key), as a chunked payload. Deltas chain:
each starts where the previous one ended, so the state at any checkpoint still in the
changelog is a full base plus the deltas up to it. A delta is named by its start, so one
rewritten after a crash replaces the leftover of the first attempt. Deltas older than
the oldest retained base are pruned with the snapshots.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from tidemark.state import chunks
from tidemark.state.retry import with_retry

CHANGELOG = "changelog"


@dataclass(frozen=True)
class Delta:
    """One checkpoint's changes: `(start, end]` in checkpoint offsets."""

    id: str
    start: int
    end: int
    keys: int
    bytes: int
    chunks: int
    checksum: str


class Changelog:
    """The changelog of one topology."""

    def __init__(self, db: AsyncDatabase[Any], topology: str, chunk_bytes: int = 1 << 20) -> None:
        self._coll = db[CHANGELOG]
        self._chunks = db[chunks.CHUNKS]
        self._topology = topology
        self._chunk_bytes = chunk_bytes

    def _id(self, partition: int, start: int) -> str:
        return f"{self._topology}:{partition}:d{start}"

    async def append(
        self, partition: int, start: int, end: int, records: Iterable[chunks.Record]
    ) -> Delta:
        """Record the changes that moved the checkpoint from `start` to `end`."""
        did = self._id(partition, start)
        # Entry first out, payload, entry back in: never a listed delta without its payload.
        await with_retry(lambda: self._coll.delete_one({"_id": did}))
        written = await chunks.write_payload(self._chunks, did, records, self._chunk_bytes)
        delta = Delta(
            did, start, end, written.keys, written.bytes, written.chunks, written.checksum
        )
        doc = {
            **delta.__dict__,
            "_id": did,
            "topology": self._topology,
            "partition": partition,
            "created_at": dt.datetime.now(dt.UTC),
        }
        del doc["id"]
        await with_retry(lambda: self._coll.replace_one({"_id": did}, doc, upsert=True))
        return delta

    async def deltas(self, partition: int) -> list[Delta]:
        """Every delta of the partition, oldest first."""
        docs = await with_retry(
            lambda: (
                self._coll.find({"topology": self._topology, "partition": partition})
                .sort("start", 1)
                .to_list(None)
            )
        )
        return [
            Delta(d["_id"], d["start"], d["end"], d["keys"], d["bytes"], d["chunks"], d["checksum"])
            for d in docs
        ]

    async def chain(self, partition: int, start: int, end: int) -> list[Delta]:
        """The deltas leading from checkpoint `start` exactly to checkpoint `end`, in order."""
        found = await self.reach(partition, start, end)
        at = found[-1].end if found else start
        if at != end:
            raise chunks.CorruptPayload(
                f"changelog of partition {partition} has no delta from {at} on the way "
                f"from {start} to {end}"
            )
        return found

    async def reach(self, partition: int, start: int, limit: int) -> list[Delta]:
        """The chain of deltas from checkpoint `start` as far as it goes without passing `limit`."""
        by_start = {d.start: d for d in await self.deltas(partition)}
        found, at = [], start
        while (delta := by_start.get(at)) is not None and delta.end <= limit:
            found.append(delta)
            at = delta.end
        return found

    async def records(self, partition: int, start: int, end: int) -> AsyncIterator[chunks.Record]:
        """The changes from checkpoint `start` to `end`, in order (a key may repeat)."""
        for delta in await self.chain(partition, start, end):
            async for record in chunks.records(
                self._chunks, delta.id, delta.chunks, delta.checksum
            ):
                yield record

    async def find(
        self, partition: int, start: int, end: int, op: str, key: str
    ) -> chunks.Record | None:
        """The last change of one key between two checkpoints, newest delta first."""
        for delta in reversed(await self.chain(partition, start, end)):
            found = None
            async for record in chunks.records(
                self._chunks, delta.id, delta.chunks, delta.checksum
            ):
                if record[0] == op and record[1] == key:
                    found = record
            if found is not None:
                return found
        return None

    async def truncate_before(self, partition: int, offset: int) -> None:
        """Drop the deltas that end at or before `offset` (a retained base covers them)."""
        old = [d.id for d in await self.deltas(partition) if d.end <= offset]
        if old:
            await with_retry(lambda: self._coll.delete_many({"_id": {"$in": old}}))
            await chunks.delete_payloads(self._chunks, old)

    async def truncate_from(self, partition: int, offset: int) -> None:
        """Drop the deltas that start at or after `offset`: that history is being rewritten."""
        stale = [d.id for d in await self.deltas(partition) if d.start >= offset]
        if stale:
            await with_retry(lambda: self._coll.delete_many({"_id": {"$in": stale}}))
            await chunks.delete_payloads(self._chunks, stale)
