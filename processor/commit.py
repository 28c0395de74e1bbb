"""The commit protocol and the Kafka transaction it is built around.

Order of one commit (docs/ARCHITECTURE.md says why each crash point is safe):

0. Check that every owned partition's epoch is still ours (one query). If a newer owner
   took one, abort the transaction, drop that partition and rewind the others.
a. Send the consumer offsets into the open transaction and commit it: outputs, dead
   letters and input progress become visible together.
b. Flush each partition's dirty state, every statement conditional on its epoch.
c. Move each partition's checkpoint to its next offset, conditional on its epoch.

Then a new transaction begins. A crash between any two steps is repaired at the next
assignment by replaying [W, C) for state only.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from processor import faults, metrics
from processor.partition import OwnedPartition
from state import Checkpoints, Fenced

if TYPE_CHECKING:
    from processor.worker import Worker

log = structlog.get_logger("tidemark.commit")
TIMEOUT = 60.0


class Committer:
    """Owns the transactional producer and runs the commit protocol for a worker."""

    def __init__(self, worker: Worker, producer: Producer, checkpoints: Checkpoints) -> None:
        self._worker = worker
        self._producer = producer
        self._checkpoints = checkpoints

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

    async def commit(self) -> None:
        parts = [p for p in self._worker.parts.values() if _pending(p)]
        if not parts:
            return
        started = time.perf_counter()
        fenced = await self._fenced(parts)
        if fenced:
            await self._abort_and_rewind(fenced)
            return
        if not await self._commit_kafka(parts):
            return
        faults.point("after_kafka_commit")
        await asyncio.gather(*(self._flush(p) for p in parts))
        faults.point("after_state_flush")
        await asyncio.gather(*(self._advance(p) for p in parts if p.number in self._worker.parts))
        faults.point("after_checkpoint")
        self._producer.begin_transaction()
        metrics.COMMITS.labels(topology=self._worker.topology.name).inc()
        metrics.COMMIT_SECONDS.labels(topology=self._worker.topology.name).observe(
            time.perf_counter() - started
        )

    async def abort(self) -> None:
        """Abort the open transaction and start a new one (partitions were lost)."""
        await asyncio.to_thread(self._producer.abort_transaction, TIMEOUT)
        self._producer.begin_transaction()

    async def _fenced(self, parts: list[OwnedPartition]) -> list[OwnedPartition]:
        current = await self._checkpoints.epochs([p.checkpoint.id for p in parts])
        return [p for p in parts if current.get(p.checkpoint.id) != p.checkpoint.epoch]

    async def _commit_kafka(self, parts: list[OwnedPartition]) -> bool:
        topic = self._worker.topology.source.topic
        offsets = [
            TopicPartition(topic, p.number, p.next_offset)
            for p in parts
            if p.next_offset is not None
        ]
        try:
            if offsets:
                metadata = self._worker.consumer_group_metadata()
                await asyncio.to_thread(
                    self._producer.send_offsets_to_transaction, offsets, metadata, TIMEOUT
                )
            await asyncio.to_thread(self._producer.commit_transaction, TIMEOUT)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if not error.txn_requires_abort():
                raise
            log.warning("kafka_commit_aborted", error=str(error))
            await self._abort_and_rewind([])
            return False
        return True

    async def _flush(self, part: OwnedPartition) -> None:
        try:
            await part.store.flush(part.checkpoint.epoch)
        except Fenced as exc:
            self._worker.drop(part, str(exc))

    async def _advance(self, part: OwnedPartition) -> None:
        assert part.next_offset is not None
        try:
            if part.failed:
                error = part.last_error or "too many consecutive failures"
                part.checkpoint = await self._checkpoints.mark_failed(
                    part.checkpoint, part.next_offset, error
                )
            else:
                part.checkpoint = await self._checkpoints.advance(part.checkpoint, part.next_offset)
        except Fenced as exc:
            self._worker.drop(part, str(exc))

    async def _abort_and_rewind(self, fenced: list[OwnedPartition]) -> None:
        """Throw away the open transaction and everything in memory it covered."""
        await asyncio.to_thread(self._producer.abort_transaction, TIMEOUT)
        for part in fenced:
            self._worker.drop(part, "epoch moved on before commit")
        numbers = list(self._worker.parts)
        known = await asyncio.to_thread(self._worker.known_offsets, numbers)
        for number in numbers:
            self._worker.seek(await self._worker.recover(number, known[number]))
        self._producer.begin_transaction()


def _pending(part: OwnedPartition) -> bool:
    """Whether the partition has progress or a failure not yet committed."""
    return part.next_offset is not None and (
        part.next_offset != part.checkpoint.offset
        or (part.failed and part.checkpoint.status != "failed")
    )
