"""Versioned snapshots of one partition's state: take, list, restore, prune.

A snapshot is a consistent cut of the partition's state at a checkpoint offset. The caller
guarantees the cut: it holds the partition's epoch and nothing flushes the partition while
the snapshot reads (the owner takes it inside its serialized state checkpoint, right after
the checkpoint moved; the replay and the CLI after fencing the owner).

A version is written payload first, then its manifest unlisted (`pending`), then the
caller's `publish` records it conditional on the writer's epoch, and only then is it
listed: a crash leaves no listed snapshot that cannot be restored, and an owner fenced
while it read (an operator may have rewritten the state meanwhile) lists nothing. A
retried version replaces its leftover chunks. In incremental
mode a version is either a full base or a delta manifest: base + the changelog up to it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from tidemark.config import faults
from tidemark.state import chunks
from tidemark.state.changelog import Changelog
from tidemark.state.errors import StateError
from tidemark.state.names import state_collection, state_id
from tidemark.state.retry import DUPLICATE_KEY, with_retry
from tidemark.state.store import DELETE_BATCH, delete_matching, send_updates

SNAPSHOTS = "snapshots"
Kind = Literal["full", "delta"]


_BATCH = 2000  # restored documents per insert
PENDING = {"pending": ""}
LISTED = {"pending": {"$ne": True}}  # written, but not yet published by its epoch
Publish = Callable[[int], Awaitable[None]]


class SnapshotNotFound(StateError):
    """No such version (or none at all) for the partition."""


@dataclass(frozen=True)
class Manifest:
    """One snapshot version: what it holds and where it was taken."""

    topology: str
    partition: int
    version: int
    offset: int  # the checkpoint it is a cut at: the next offset to read
    created_at: dt.datetime
    keys: int
    bytes: int
    chunks: int
    checksum: str
    topology_hash: str
    kind: Kind = "full"
    base: int | None = None  # for a delta: the full version it builds on

    @property
    def id(self) -> str:
        return manifest_id(self.topology, self.partition, self.version)

    def age(self, now: dt.datetime | None = None) -> float:
        return ((now or _now()) - self.created_at).total_seconds()

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Manifest:
        fields = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        created = fields["created_at"]
        if created.tzinfo is None:  # BSON dates come back naive unless tz_aware
            fields["created_at"] = created.replace(tzinfo=dt.UTC)
        return cls(**fields)


def manifest_id(topology: str, partition: int, version: int) -> str:
    return f"{topology}:{partition}:{version}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Snapshots:
    """The snapshots of one topology."""

    def __init__(self, db: AsyncDatabase[Any], topology: str, chunk_bytes: int = 1 << 20) -> None:
        self._db = db
        self._manifests = db[SNAPSHOTS]
        self._chunks = db[chunks.CHUNKS]
        self._state = db[state_collection(topology)]
        self.topology = topology
        self._chunk_bytes = chunk_bytes
        self.changelog = Changelog(db, topology, chunk_bytes)

    # -- reading -------------------------------------------------------------------------

    async def versions(self, partition: int) -> list[Manifest]:
        """Every listed version of the partition, oldest first."""
        flt = {"topology": self.topology, "partition": partition, **LISTED}
        docs = await with_retry(lambda: self._manifests.find(flt).sort("version", 1).to_list(None))
        return [Manifest.from_doc(d) for d in docs]

    async def latest(self, partition: int) -> Manifest | None:
        found = await self.versions(partition)
        return found[-1] if found else None

    async def get(self, partition: int, version: int | None = None) -> Manifest:
        """Version `version` (newest if None); `SnapshotNotFound` if absent."""
        if version is None:
            found = await self.latest(partition)
        else:
            doc = await with_retry(
                lambda: self._manifests.find_one(
                    {"_id": manifest_id(self.topology, partition, version), **LISTED}
                )
            )
            found = Manifest.from_doc(doc) if doc else None
        if found is None:
            which = "any version" if version is None else f"version {version}"
            raise SnapshotNotFound(f"partition {partition} has no snapshot {which}")
        return found

    async def at_or_before(self, partition: int, offset: int) -> Manifest | None:
        """The newest version cut at or before `offset`."""
        found = [m for m in await self.versions(partition) if m.offset <= offset]
        return found[-1] if found else None

    async def verify(self, manifest: Manifest) -> None:
        """Check every chunk (and the changelog a delta needs); `CorruptPayload` if not intact."""
        base = await self._base(manifest)
        await chunks.verify(self._chunks, base.id, base.chunks, base.checksum)
        if manifest.kind == "delta":
            async for _ in self.changelog.records(manifest.partition, base.offset, manifest.offset):
                pass

    async def records(self, manifest: Manifest) -> AsyncIterator[chunks.Record]:
        """The state records of a version; a delta's base first, then its changelog in order."""
        base = await self._base(manifest)
        async for record in chunks.records(self._chunks, base.id, base.chunks, base.checksum):
            yield record
        if manifest.kind == "delta":
            async for record in self.changelog.records(
                manifest.partition, base.offset, manifest.offset
            ):
                yield record

    async def _base(self, manifest: Manifest) -> Manifest:
        if manifest.kind == "full":
            return manifest
        assert manifest.base is not None
        return await self.get(manifest.partition, manifest.base)

    # -- writing -------------------------------------------------------------------------

    async def take(
        self,
        partition: int,
        offset: int,
        topology_hash: str,
        publish: Publish,
        kind: Kind = "full",
        floor: int = 0,
    ) -> Manifest:
        """Write the next version: a cut of the partition's state as it is now, at `offset`.

        `publish(version)` must record the version conditional on the writer's epoch (it
        raises if a newer owner took over: the version is then discarded). `floor` is the
        partition's `Checkpoint.floor`: older documents are void, left out of the cut and
        removed afterwards (the scan is paid for anyway).
        """
        latest = await self.latest(partition)
        version = await self._next_version(partition, latest)
        mid = manifest_id(self.topology, partition, version)
        if kind == "delta" and not await self._can_build_on(latest, offset):
            kind = "full"
        if kind == "full":
            void: list[str] = []
            written = await chunks.write_payload(
                self._chunks, mid, self._live_records(partition, floor, void), self._chunk_bytes
            )
            if void:
                await self._delete_ids(void)
            base = None
            keys, size, parts, checksum = (
                written.keys,
                written.bytes,
                written.chunks,
                written.checksum,
            )
        else:
            assert latest is not None
            base = latest.base if latest.kind == "delta" else latest.version
            # Counting live keys means scanning the partition; a delta records what its
            # changelog rewrites since the base instead.
            base_offset = (await self._base(latest)).offset
            chain = await self.changelog.chain(partition, base_offset, offset)
            keys, size = sum(d.keys for d in chain), sum(d.bytes for d in chain)
            parts, checksum = 0, ""
        manifest = Manifest(
            self.topology,
            partition,
            version,
            offset,
            _now(),
            keys,
            size,
            parts,
            checksum,
            topology_hash,
            kind,
            base,
        )
        doc = {"_id": mid, **manifest.__dict__, "pending": True}
        faults.point("write_manifest")
        # The version is ours alone (the counter), so a replace is a safe retry.
        await with_retry(lambda: self._manifests.replace_one({"_id": mid}, doc, upsert=True))
        try:
            faults.point("publish_snapshot")
            await publish(version)
        except BaseException:
            await self._discard(manifest)
            raise
        await with_retry(lambda: self._manifests.update_one({"_id": mid}, {"$unset": PENDING}))
        return manifest

    async def _discard(self, manifest: Manifest) -> None:
        await with_retry(lambda: self._manifests.delete_one({"_id": manifest.id}))
        await chunks.delete_payloads(self._chunks, [manifest.id])

    async def _next_version(self, partition: int, latest: Manifest | None) -> int:
        """Versions count up and are never reused, even after a restore dropped newer delta
        versions; a snapshot that crashed midway leaves its number unused."""
        counter = {"_id": f"seq:{self.topology}:{partition}"}  # no `topology`: never listed
        doc = await with_retry(
            lambda: self._manifests.find_one_and_update(
                counter, {"$inc": {"last": 1}}, upsert=True, return_document=ReturnDocument.AFTER
            )
        )
        assert doc is not None
        version = max(int(doc["last"]), latest.version + 1 if latest else 1)
        if version != doc["last"]:
            catch_up = {"$max": {"last": version}}
            await with_retry(lambda: self._manifests.update_one(counter, catch_up))
        return version

    async def _can_build_on(self, latest: Manifest | None, offset: int) -> bool:
        """A delta needs a base and an unbroken changelog from it (a crash can break it)."""
        if latest is None or latest.offset > offset:
            return False
        base = await self._base(latest)
        try:
            await self.changelog.chain(latest.partition, base.offset, offset)
        except chunks.CorruptPayload:
            return False
        return True

    async def _live_records(
        self, partition: int, floor: int, void: list[str]
    ) -> AsyncIterator[chunks.Record]:
        cursor = self._state.find(
            {"p": partition, "del": {"$ne": True}},
            {"op": 1, "k": 1, "v": 1, "off": 1, "ep": 1},
            batch_size=2000,  # smaller batches: shorter decode stalls of the event loop
        )
        async for doc in cursor:
            if doc.get("ep", 0) < floor:
                void.append(doc["_id"])
            else:
                yield (doc["op"], doc["k"], doc["v"], doc["off"])

    async def restore(
        self, manifest: Manifest, epoch: int, progress: Callable[[int], object] | None = None
    ) -> int:
        """Replace the partition's state with the version's; the number of keys written.

        The caller holds `epoch`, raised the partition's floor to it (so a zombie's write
        that re-creates a deleted key is void) and moves the checkpoint to `manifest.offset`
        afterwards. Every checksum is verified first, so a corrupt snapshot changes nothing.
        """
        await self.verify(manifest)
        await self.clear(manifest.partition, epoch)
        faults.point("restore_write")
        latest: dict[str, dict[str, Any]] = {}
        written = 0

        async def write(docs: list[dict[str, Any]]) -> int:
            count = await self._write(docs, epoch)
            if progress is not None:
                progress(len(docs))
            return count

        async for op, key, value, off in self.records(manifest):
            sid = state_id(op, manifest.partition, key)
            latest[sid] = {
                "_id": sid,
                **{"op": op, "k": key, "p": manifest.partition, "v": value, "off": off},
                **{"ep": epoch, "del": value is None},
            }
            # A full payload has each key once: write as it streams. A delta's changelog
            # rewrites keys, so its records are coalesced first.
            if manifest.kind == "full" and len(latest) >= _BATCH:
                written += await write(list(latest.values()))
                latest.clear()
        live = [d for d in latest.values() if not d["del"]]
        for start in range(0, len(live), _BATCH):
            written += await write(live[start : start + _BATCH])
        await self.forget_after(manifest.partition, manifest.offset)
        return written

    async def _write(self, docs: list[dict[str, Any]], epoch: int) -> int:
        """Insert restored documents; where one exists (a zombie wrote it after the clear, or
        our own retry did), overwrite it only if its epoch is not newer than ours."""
        try:
            await with_retry(lambda: self._state.insert_many(docs, ordered=False))
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or [{}]
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            # FerretDB may stop at the first duplicate: rewrite the whole batch, fenced.
            what = f"restore of partition {docs[0]['p']}"
            for start in range(0, len(docs), 200):
                statements = [
                    {
                        "q": {"_id": d["_id"], "ep": {"$lte": epoch}},
                        "u": {"$set": d},
                        "upsert": True,
                    }
                    for d in docs[start : start + 200]
                ]
                await send_updates(self._state, statements, epoch, what)
        return len(docs)

    async def clear(self, partition: int, epoch: int) -> None:
        """Remove the partition's state up to `epoch` (replay from the start, or a restore).

        The caller raised the floor to `epoch` first, so the documents deleted here cannot
        come back to life through a zombie's retried flush.
        """
        faults.point("restore_clear")
        await delete_matching(self._state, {"p": partition, "ep": {"$lte": epoch}})

    async def _delete_ids(self, ids: list[str]) -> None:
        for start in range(0, len(ids), DELETE_BATCH):
            batch = {"_id": {"$in": ids[start : start + DELETE_BATCH]}}
            await with_retry(lambda b=batch: self._state.delete_many(b))  # type: ignore[misc]

    async def forget_after(self, partition: int, offset: int) -> None:
        """The partition's history after `offset` is about to be rewritten: drop the changelog
        from there and the delta versions that rely on it (full versions stay restorable)."""
        await self.changelog.truncate_from(partition, offset)
        flt = {
            "topology": self.topology,
            "partition": partition,
            "kind": "delta",
            "offset": {"$gt": offset},
        }
        await with_retry(lambda: self._manifests.delete_many(flt))

    async def _reserved(self, partition: int) -> int:
        counter = await with_retry(
            lambda: self._manifests.find_one({"_id": f"seq:{self.topology}:{partition}"})
        )
        return int(counter["last"]) if counter else 0

    async def _remove_orphans(self, partition: int, kept: set[int], reserved: int) -> None:
        """Remove the chunks of pruned versions and the leftovers of snapshots that crashed
        before they were listed, but never those of the newest reserved version: its owner
        may be writing it right now (a crashed one goes at the prune after the next)."""
        own = f"^{re.escape(self.topology)}:{partition}:[0-9]+$"
        owners = await with_retry(
            lambda: self._chunks.distinct("owner", {"owner": {"$regex": own}})
        )
        orphans = [
            o for o in owners if (v := int(o.rsplit(":", 1)[1])) not in kept and v < reserved
        ]
        if orphans:
            await chunks.delete_payloads(self._chunks, orphans)
        unlisted = {"topology": self.topology, "partition": partition, "pending": True}
        stale = {**unlisted, "version": {"$lt": reserved}}
        await with_retry(lambda: self._manifests.delete_many(stale))

    async def prune(
        self, partition: int, retain: int, max_age: float | None, now: dt.datetime | None = None
    ) -> list[int]:
        """Apply the retention policy; the versions removed, oldest first.

        Kept: the newest `retain` versions, minus those older than `max_age`, but always the
        newest one (a partition is never left without a restore point) and any full base a
        kept delta builds on. Changelog entries older than the oldest kept base go too.
        """
        # The counter first: a version reserved after it is read is not in `found` either.
        reserved = await self._reserved(partition)
        found = await self.versions(partition)
        if not found:
            return []
        now = now or _now()
        keep = {m.version for m in found[-retain:] if max_age is None or m.age(now) <= max_age}
        keep.add(found[-1].version)
        keep |= {m.base for m in found if m.version in keep and m.base is not None}
        gone = [m for m in found if m.version not in keep]
        if gone:
            ids = [m.id for m in gone]
            # Manifests first: a crash midway leaves unlisted chunks, never a listed
            # snapshot without its payload.
            await with_retry(lambda: self._manifests.delete_many({"_id": {"$in": ids}}))
        await self._remove_orphans(
            partition, {m.version for m in found if m.version in keep}, reserved
        )
        oldest_base = min(m.offset for m in found if m.version in keep and m.kind == "full")
        await self.changelog.truncate_before(partition, oldest_base)
        return [m.version for m in gone]
