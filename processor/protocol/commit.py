"""The commit protocol and the Kafka transaction it is built around.

Order of one commit (docs/ARCHITECTURE.md says why each crash point is safe):

0. Check that every owned partition's epoch is still ours (one query). If a newer owner
   took one, drop that partition, abort the transaction and let the caller rewind the
   others to their checkpoints.
a. Send the consumer offsets into the open transaction and commit it: outputs, dead
   letters and input progress become visible together.
b. Flush each partition's dirty state, every statement conditional on its epoch.
c. Move each partition's checkpoint to its next offset, conditional on its epoch.

Steps b and c run every `checkpoint.state_interval` as a task beside processing, over
the dirty keys and offsets taken right after step a; a new transaction begins at once.
After c, in the same task, the changelog grows and a due snapshot is taken
(`snapshotting.py`): nothing flushes the partition until they are done, so they read a
consistent cut.
A crash between any two steps is repaired at the next assignment by replaying [W, C)
for state only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from tidemark.config import Topology, faults
from tidemark.processor.observability import metrics
from tidemark.processor.protocol.partition import OwnedPartition
from tidemark.processor.protocol.snapshotting import Snapshotter
from tidemark.state import Checkpoints, Fenced
from tidemark.state.chunks import Record


class Owner(Protocol):
    """What the protocol needs of whoever owns partitions: a worker, or a replay."""

    topology: Topology
    parts: dict[int, OwnedPartition]

    def drop(self, part: OwnedPartition, reason: str) -> None:
        """Stop processing a partition a newer epoch took."""


log = structlog.get_logger("tidemark.commit")
TIMEOUT = 60.0


class Committer:
    """Owns the transactional producer and runs the commit protocol for a worker."""

    def __init__(
        self,
        worker: Owner,
        producer: Producer,
        checkpoints: Checkpoints,
        snapshotter: Snapshotter,
    ) -> None:
        self._worker = worker
        self._producer = producer
        self._checkpoints = checkpoints
        self._snapshotter = snapshotter
        self._last_state = time.monotonic()
        self._state_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._producer.init_transactions, TIMEOUT)
        self._producer.begin_transaction()

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Produce into the open transaction, waiting for room when the queue is full."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=-1 if partition is None else partition,  # -1: the partitioner's
                    headers=headers,  # type: ignore[arg-type]
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    async def commit(self, group_metadata: object) -> bool:
        """Commit Kafka; start a state checkpoint too when its interval is due.

        Between state checkpoints W lags C, which is the state "after step a" that recovery
        already handles; the lag coalesces more writes per key and bounds what a recovery
        replays to about `checkpoint.state_interval`.
        """
        return await self._commit(group_metadata, self._state_due())

    async def commit_all(self, group_metadata: object) -> bool:
        """Commit Kafka, state and checkpoints, and wait for them (before giving up)."""
        await self.settle()
        committed = await self._commit(group_metadata, True)
        await self.settle()
        return committed

    async def settle(self) -> None:
        """Wait for the state checkpoint in flight; its failure is raised here."""
        task, self._state_task = self._state_task, None
        if task is not None:
            await task

    async def _commit(self, group_metadata: object, with_state: bool) -> bool:
        """Run the protocol over every partition with progress; False if it aborted instead.

        After an abort the caller rewinds its partitions to their checkpoints. The group
        metadata comes from the caller because the consumer may only be called from the
        thread inside `consume` while a rebalance callback runs.
        """
        if self._state_task is not None and self._state_task.done():
            await self.settle()
        parts = [p for p in self._worker.parts.values() if _pending(p)]
        if not parts:
            return True
        started = time.perf_counter()
        fenced = await self._fenced(parts)
        if fenced:
            for part in fenced:
                self._worker.drop(part, "epoch moved on before commit")
            await self.abort()
            return False
        if not await self._commit_kafka(parts, group_metadata):
            await self.abort()
            return False
        faults.point("after_kafka_commit")
        if with_state and self._state_task is None:
            # Steps b and c run beside processing; the dirty keys are taken right here. A
            # partition still re-applying [W, C) waits: a checkpoint below C could cut
            # through keys that a crashed owner's partial flush moved past it.
            cuts = [_Cut.take(p) for p in parts if not p.replaying]
            self._state_task = asyncio.create_task(self._checkpoint_state(cuts))
            self._last_state = time.monotonic()
        self._producer.begin_transaction()
        metrics.COMMITS.labels(topology=self._worker.topology.name).inc()
        metrics.COMMIT_SECONDS.labels(topology=self._worker.topology.name).observe(
            time.perf_counter() - started
        )
        return True

    async def _checkpoint_state(self, cuts: list[_Cut]) -> None:
        written = await asyncio.gather(*(self._flush(c.part, c.write) for c in cuts))
        faults.point("after_state_flush")
        await asyncio.gather(
            *(
                self._advance(cut, records)
                for cut, records in zip(cuts, written, strict=True)
                if cut.offset is not None and self._owned(cut.part)
            )
        )
        faults.point("after_checkpoint")

    async def backpressure(self) -> None:
        """Past `max_dirty_keys` with a state checkpoint still running, wait for it.

        This bounds memory (dirty plus in-flight keys) and how far W may lag C, so a slow
        MongoDB slows processing instead of growing memory and recovery time without end.
        """
        parts = self._worker.parts.values()
        limit = self._worker.topology.checkpoint.max_dirty_keys
        if self._state_task is not None and sum(p.store.dirty_count for p in parts) >= limit:
            await self.settle()

    def state_overdue(self) -> bool:
        """State waits to be flushed and its interval has passed (even with no new records)."""
        return self._state_due() and any(_pending(p) for p in self._worker.parts.values())

    def _state_due(self) -> bool:
        checkpoint = self._worker.topology.checkpoint
        parts = self._worker.parts.values()
        idle = self._state_task is None or self._state_task.done()
        return idle and (
            time.monotonic() - self._last_state >= checkpoint.state_interval
            or sum(p.store.dirty_count for p in parts) >= checkpoint.max_dirty_keys
            or any(p.failed and p.checkpoint.status != "failed" for p in parts)
            or any(_requested(p) for p in parts)
        )

    def _owned(self, part: OwnedPartition) -> bool:
        return self._worker.parts.get(part.number) is part

    async def abort(self) -> None:
        """Abort the open transaction and begin the next one."""
        await asyncio.to_thread(self._producer.abort_transaction, TIMEOUT)
        self._producer.begin_transaction()

    async def _fenced(self, parts: list[OwnedPartition]) -> list[OwnedPartition]:
        current = await self._checkpoints.current([p.checkpoint.id for p in parts])
        return [
            p
            for p in parts
            if (cp := current.get(p.checkpoint.id)) is None or cp.epoch != p.checkpoint.epoch
        ]

    async def _commit_kafka(self, parts: list[OwnedPartition], group_metadata: object) -> bool:
        topic = self._worker.topology.source.topic
        # While replaying [W, C) the position is below C: Kafka's committed offset must not
        # move back, or outputs of [position, C) would be emitted again after a crash.
        offsets = [
            TopicPartition(topic, p.number, max(p.next_offset, p.emit_from, p.commit_floor))
            for p in parts
            if p.next_offset is not None
        ]
        try:
            if offsets:
                await asyncio.to_thread(
                    self._producer.send_offsets_to_transaction, offsets, group_metadata, TIMEOUT
                )
            await asyncio.to_thread(self._producer.commit_transaction, TIMEOUT)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if not error.txn_requires_abort():
                raise
            log.warning("kafka_commit_aborted", error=str(error))
            return False
        return True

    async def _flush(
        self, part: OwnedPartition, write: Awaitable[Iterable[Record]]
    ) -> Iterable[Record]:
        try:
            return await write
        except Fenced as exc:
            self._worker.drop(part, str(exc))
            return []

    async def _advance(self, cut: _Cut, flushed: Iterable[Record]) -> None:
        part, offset = cut.part, cut.offset
        assert offset is not None
        try:
            if part.failed:
                error = part.last_error or "too many consecutive failures"
                part.checkpoint = await self._checkpoints.mark_failed(
                    part.checkpoint, offset, error, cut.dead_letters
                )
            else:
                part.checkpoint = await self._checkpoints.advance(
                    part.checkpoint, offset, cut.dead_letters
                )
            # The changelog may read deletes back from MongoDB: sweep them after it.
            await self._snapshotter.after_checkpoint(part, offset, flushed)
            if part.store.tombstones:
                await part.store.sweep_tombstones(part.checkpoint.epoch, offset)
        except Fenced as exc:
            self._worker.drop(part, str(exc))


@dataclass
class _Cut:
    """What a state checkpoint writes for one partition, taken right after a Kafka commit."""

    part: OwnedPartition
    offset: int | None
    write: Awaitable[Iterable[Record]]
    dead_letters: int

    @classmethod
    def take(cls, part: OwnedPartition) -> _Cut:
        dead_letters, part.dead_letters = part.dead_letters, 0
        write = part.store.flush(part.checkpoint.epoch)
        return cls(part, _position(part), write, dead_letters)


def _requested(part: OwnedPartition) -> bool:
    """A snapshot was asked for and can be taken (not while re-applying [W, C))."""
    return part.checkpoint.snapshot_request is not None and not part.replaying


def _pending(part: OwnedPartition) -> bool:
    """Whether the partition has progress, a failure or a snapshot request to checkpoint."""
    if _requested(part):
        return True
    return part.next_offset is not None and (
        part.next_offset != part.checkpoint.offset
        or (part.failed and part.checkpoint.status != "failed")
    )


def _position(part: OwnedPartition) -> int | None:
    return part.next_offset if part.next_offset is not None else part.checkpoint.offset
