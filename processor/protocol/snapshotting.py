"""When an owner takes snapshots and writes the changelog: right after a state checkpoint.

Both run inside the worker's state-checkpoint task, after the partition's checkpoint moved
and before the next flush can start, so what they read from MongoDB is exactly the state
at that checkpoint: a consistent cut with no copy of the state in memory. Processing goes
on meanwhile; only the next state checkpoint waits (and, past `max_dirty_keys`, the loop).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import structlog

from tidemark.config import Topology, faults
from tidemark.processor.observability import metrics
from tidemark.processor.protocol.partition import Partition
from tidemark.state import Checkpoints
from tidemark.state.chunks import Record
from tidemark.state.snapshots import Kind, Manifest, Snapshots

log = structlog.get_logger("tidemark.snapshots")


class Snapshotter:
    """Applies a topology's `snapshots` policy to the partitions a worker owns."""

    def __init__(self, topology: Topology, snapshots: Snapshots, checkpoints: Checkpoints) -> None:
        self._policy = topology.snapshots
        self._labels = {"topology": topology.name}
        self._hash = topology.semantic_hash()
        self.snapshots = snapshots
        self._checkpoints = checkpoints

    @property
    def incremental(self) -> bool:
        return self._policy.mode == "incremental"

    async def adopt(self, part: Partition) -> None:
        """At assignment: when the last snapshot was taken, where the changelog stands."""
        latest = await self.snapshots.latest(part.number)
        part.last_snapshot = time.monotonic() - (latest.age() if latest else 0.0)
        if self.incremental:
            # The changelog answers "as of" questions from a base on: lay one down at the
            # first checkpoint rather than leave the early history unanswerable.
            part.snapshot_due = latest is None
            # The first delta after an assignment is read back from MongoDB: a crash may
            # have left the changelog behind the checkpoint, and a recovery skips keys a
            # partial flush already wrote, so the dirty set alone could miss changes.
            part.changelog_from = part.checkpoint.changelog
            if part.changelog_from is None:
                part.changelog_from = part.checkpoint.offset
            part.changelog_rebuild = True

    async def after_checkpoint(
        self, part: Partition, offset: int, flushed: Iterable[Record]
    ) -> None:
        """Extend the changelog to `offset`, then take a snapshot there if one is due."""
        if self.incremental:
            faults.point("append_changelog")
            await self._record_delta(part, offset, flushed)
        request = part.snapshot_request
        if request or part.snapshot_due or self._due(part):
            faults.point("take_snapshot")
            await self.take(part, offset, request)

    async def _record_delta(self, part: Partition, offset: int, flushed: Iterable[Record]) -> None:
        start = part.changelog_from
        if start is None or start >= offset:
            return
        if part.changelog_rebuild:
            flushed = await part.store.changed_since(start)
        await self.snapshots.changelog.append(part.number, start, offset, flushed)
        await self._checkpoints.changelog_reaches(part.checkpoint, offset)
        part.note(changelog=offset)
        part.changelog_from, part.changelog_rebuild = offset, False

    def _due(self, part: Partition) -> bool:
        p = self._policy
        return (p.interval is not None and time.monotonic() - part.last_snapshot >= p.interval) or (
            p.every_records is not None and part.records_since_snapshot >= p.every_records
        )

    async def take(self, part: Partition, offset: int, request: str | None) -> Manifest:
        started = time.perf_counter()
        latest = await self.snapshots.latest(part.number)
        next_version = latest.version + 1 if latest else 1
        full_due = (next_version - 1) % self._policy.full_every == 0
        kind: Kind = "delta" if self.incremental and not full_due else "full"

        async def publish(version: int) -> None:
            # Conditional on our epoch: fenced while we read, the version is discarded.
            await self._checkpoints.snapshot_taken(part.checkpoint, version)

        manifest = await self.snapshots.take(
            part.number, offset, self._hash, publish, kind, part.checkpoint.floor
        )
        part.last_snapshot, part.records_since_snapshot = time.monotonic(), 0
        part.snapshot_due = False
        if request:
            # Listed by now, so `snapshot take` finds the version it asked for. Remembered
            # here, not by clearing the copy: a poll that read the document before the
            # answer was stored must not ask again.
            await self._checkpoints.answer_snapshot(part.checkpoint, request)
            part.answered.add(request)
        pruned = await self.snapshots.prune(part.number, self._policy.retain, self._policy.max_age)
        seconds = time.perf_counter() - started
        metrics.SNAPSHOTS.labels(**self._labels).inc()
        metrics.SNAPSHOT_SECONDS.labels(**self._labels).observe(seconds)
        metrics.SNAPSHOT_BYTES.labels(**self._labels).inc(manifest.bytes)
        log.info(
            "snapshot_taken",
            partition=part.number,
            version=manifest.version,
            kind=manifest.kind,
            offset=offset,
            keys=manifest.keys,
            bytes=manifest.bytes,
            seconds=round(seconds, 3),
            pruned=pruned,
        )
        return manifest
