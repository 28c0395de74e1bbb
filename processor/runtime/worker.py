"""One worker: a consumer-group member that runs a topology over the partitions it owns.

The loop consumes a batch, runs it through the pipeline per partition (state prefetched once
per stage), produces outputs and dead letters into the open Kafka transaction, and every
`checkpoint.interval` or `checkpoint.max_records` runs the commit protocol in `commit.py`.
Rebalance callbacks fire inside `consume`, on the consumer's thread; they hand their work to
the event loop and wait for it, so all state is touched by the loop alone.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from confluent_kafka import Consumer, Message, TopicPartition
from pymongo import AsyncMongoClient

from tidemark.config import Topology
from tidemark.operators import build_pipeline
from tidemark.processor.kafka import clients as kafka
from tidemark.processor.observability import metrics
from tidemark.processor.protocol.commit import Committer
from tidemark.processor.protocol.partition import OwnedPartition
from tidemark.processor.protocol.snapshotting import Snapshotter
from tidemark.processor.runtime.batch import BatchProcessor, Raw
from tidemark.processor.runtime.control import Control
from tidemark.state import Checkpoints, PartitionStore, ensure_collections
from tidemark.state.names import checkpoint_id, state_collection
from tidemark.state.snapshots import Snapshots

T = TypeVar("T")


@dataclass(frozen=True)
class Known:
    """What Kafka says of a partition at assignment."""

    committed: int | None
    first_start: int


log = structlog.get_logger("tidemark.worker")
BATCH = 2000


class Worker:
    """Runs `topology` as one member of its consumer group until `stop()`."""

    def __init__(self, topology: Topology, owner: str | None = None) -> None:
        self.topology = topology
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.pipeline = build_pipeline(topology)
        self.parts: dict[int, OwnedPartition] = {}
        self._stopping = asyncio.Event()
        self._labels = {"topology": topology.name}
        self._to_pause: set[int] = set()
        self.assigned: set[int] = set()
        # Assigned, not processed, waiting to be handed back by an operator (replay, restore).
        self.held: set[int] = set()

    def stop(self) -> None:
        """Finish the batch in hand, commit, leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        t = self.topology
        self._loop = asyncio.get_running_loop()
        counts = await asyncio.to_thread(kafka.check_topics, t)
        # Outputs keep their input's partition number when the sink is partitioned alike.
        sink_partitions = counts.get(t.sink.topic) if t.sink else None
        sink_partitioned = sink_partitions == counts[t.source.topic]
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(t.mongo.uri, appname=self.owner)
        try:
            db = mongo[t.mongo.database]
            await ensure_collections(db, t.name)
            self._checkpoints = Checkpoints(db, t.name)
            self._state = db[state_collection(t.name)]
            self._snapshotter = Snapshotter(
                t, Snapshots(db, t.name, t.snapshots.chunk_bytes), self._checkpoints
            )
            self.consumer = kafka.consumer(t, self.owner)
            self.committer = Committer(
                self, kafka.producer(t, self.owner), self._checkpoints, self._snapshotter
            )
            self._control = Control(self, self._checkpoints)
            self._batches = BatchProcessor(t, self.pipeline, self.committer, sink_partitioned)
            await self.committer.start()
            self.consumer.subscribe(
                [t.source.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info("worker_started", topology=t.name, owner=self.owner)
            beat = asyncio.create_task(self._control.heartbeat_forever())
            try:
                await self._loop_until_stopped()
            finally:
                beat.cancel()
        finally:
            if hasattr(self, "consumer"):
                await asyncio.to_thread(self.consumer.close)
            await mongo.close()
            log.info("worker_stopped", topology=t.name, owner=self.owner)

    async def _loop_until_stopped(self) -> None:
        interval, max_records = (
            self.topology.checkpoint.interval,
            self.topology.checkpoint.max_records,
        )
        last_commit, since_commit = time.monotonic(), 0
        last_poll = 0.0
        batch = min(BATCH, max_records)
        while not self._stopping.is_set():
            messages = await asyncio.to_thread(self.consumer.consume, batch, 0.2)
            if messages:
                since_commit += await self._process(messages)
            self._apply_pauses()
            if time.monotonic() - last_poll >= interval:
                await self._control.poll()
                last_poll = time.monotonic()
            if (
                since_commit
                and (since_commit >= max_records or time.monotonic() - last_commit >= interval)
            ) or self.committer.state_overdue():
                await self.commit(self.committer.commit)
                last_commit, since_commit = time.monotonic(), 0
                # Only right after a commit: the new transaction is empty, so waiting for
                # MongoDB cannot run it into the transaction timeout.
                await self.committer.backpressure()
        await self.commit(self.committer.commit_all)

    async def commit(self, commit: Callable[[object], Awaitable[bool]]) -> None:
        """Run `commit` (a `Committer` method); rewind to the checkpoints if it aborted."""
        if not await commit(self.consumer.consumer_group_metadata()):
            await self._rewind()

    async def _rewind(self) -> None:
        """After an aborted transaction: start every partition again from its checkpoint."""
        await self.committer.settle()
        await self.restart(list(self.parts))

    async def restart(self, numbers: list[int]) -> None:
        """Recover these assigned partitions and read each from its checkpoint again."""
        known = await asyncio.to_thread(self.known_offsets, numbers)
        for number in numbers:
            tp = await self.recover(number, known[number])
            if tp is None or self.parts[number].failed:
                self.pause(number)
                continue
            self.consumer.seek(tp)
            self.consumer.resume([tp])

    # -- processing ---------------------------------------------------------------------

    async def _process(self, messages: list[Message]) -> int:
        batches: dict[int, list[Raw]] = defaultdict(list)
        for m in messages:
            number, offset = m.partition(), m.offset()
            if m.error() is not None or number is None or offset is None:
                log.warning("consume_error", error=str(m.error()))
                continue
            batches[number].append(Raw(offset, m.key(), m.value(), m.timestamp()[1]))
        for number, batch in batches.items():
            part = self.parts.get(number)
            if part is not None and not part.failed:
                await self._batches.run(part, batch)
                if part.failed:
                    self.pause(number)
        return sum(len(b) for b in batches.values())

    # -- ownership ----------------------------------------------------------------------

    def pause(self, number: int) -> None:
        """Pause a partition at the next turn of the loop, outside any rebalance callback."""
        self._to_pause.add(number)

    def _apply_pauses(self) -> None:
        if self._to_pause:
            topic = self.topology.source.topic
            self.consumer.pause([TopicPartition(topic, n) for n in self._to_pause])
            self._to_pause.clear()

    def forget(self, part: OwnedPartition) -> None:
        """Stop processing a partition and drop its memory; it stays assigned and paused."""
        if self.parts.get(part.number) is part:
            del self.parts[part.number]
        part.store.forget()
        self.pause(part.number)

    def drop(self, part: OwnedPartition, reason: str) -> None:
        """Stop processing a partition another owner fenced us out of."""
        if self.parts.get(part.number) is not part:
            return  # already replaced by a newer assignment
        self.forget(part)
        # An operator may have fenced it without our acknowledgement (we looked dead); the
        # poll resumes it when the operator hands it back, not if a group member took it.
        self.held.add(part.number)
        metrics.FENCED.labels(**self._labels).inc()
        log.warning("partition_dropped", partition=part.number, reason=reason)

    async def recover(self, number: int, known: Known) -> TopicPartition | None:
        """Take partition `number`: new epoch, then where to start and from where to emit.

        W is the checkpoint in MongoDB, C the committed offset in Kafka. Reading resumes at
        W; events in [W, C) rebuild state only, their outputs being committed already.
        None if an operator holds the partition (a replay or a restore): it is left alone.
        """
        t = self.topology
        cp = await self._checkpoints.acquire(t.source.topic, number, self.owner)
        if cp.held:
            stale = self.parts.pop(number, None)
            if stale is not None:  # a rewind found it handed off: what it had is aborted
                stale.store.forget()
            self.held.add(number)
            log.info("partition_held", partition=number, status=cp.status)
            return None
        if cp.offset is None:
            # First owner ever: pin where processing starts, so that a crash before the first
            # checkpoint replays from here and not from Kafka's committed offset.
            cp = await self._checkpoints.advance(cp, known.first_start)
        assert cp.offset is not None
        store = PartitionStore(self._state, number, t.state.cache_entries, t.state.flush_statements)
        part = OwnedPartition(
            checkpoint=cp,
            store=store,
            states={op: store.view(op) for op in self.pipeline.stateful_ids},
            emit_from=max(cp.offset, known.committed or 0),
            failed=cp.status == "failed",
        )
        part.cut_from = part.emit_from
        await self._snapshotter.adopt(part)
        self.parts[number] = part
        self.held.discard(number)
        log.info(
            "partition_assigned",
            partition=number,
            epoch=cp.epoch,
            start=cp.offset,
            emit_from=part.emit_from,
        )
        return TopicPartition(t.source.topic, number, cp.offset)

    def known_offsets(self, numbers: list[int]) -> dict[int, Known]:
        """Kafka's view of these partitions: committed offsets (after pending transactional
        commits settle) and where a first owner starts. Blocking: the consumer's thread."""
        topic = self.topology.source.topic
        found = self.consumer.committed([TopicPartition(topic, n) for n in numbers], timeout=30)
        known = {}
        for tp in found:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=30)
            first = low if self.topology.source.start == "earliest" else high
            known[tp.partition] = Known(tp.offset if tp.offset >= 0 else None, first)
        return known

    # Rebalance callbacks: called on the consumer's thread from inside `consume`.

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        known = self.known_offsets([tp.partition for tp in partitions])
        self.assigned |= set(known)
        starts = {n: self._call(self.recover(n, k)) for n, k in known.items()}
        topic = self.topology.source.topic
        consumer.assign([tp or TopicPartition(topic, n) for n, tp in starts.items()])
        idle = [TopicPartition(topic, n) for n in starts if n in self.held or self.parts[n].failed]
        if idle:
            consumer.pause(idle)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Whether it commits or aborts, these partitions are given up: nothing to rewind.
        self._call(self.committer.commit_all(consumer.consumer_group_metadata()))
        self._call(self._release(partitions))
        self._forget_all()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._call(self.committer.abort())
        self._call(self.committer.settle())
        self._forget_all()

    async def _release(self, partitions: list[TopicPartition]) -> None:
        t = self.topology
        ids = [checkpoint_id(t.name, t.source.topic, tp.partition) for tp in partitions]
        await self._checkpoints.release(ids, self.owner)

    def _forget_all(self) -> None:
        for part in self.parts.values():
            part.store.forget()
        self.parts.clear()
        self._to_pause.clear()
        self.assigned.clear()
        self.held.clear()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
