"""One worker: a consumer-group member that runs a topology over the partitions it owns.

The loop consumes a batch, runs it through the pipeline per partition (`batch.py`), and
every `checkpoint.interval` or `checkpoint.max_records` commits (`protocol/commit.py`);
once per interval it reads what operators ask of it (`control.py`). Rebalance callbacks
fire inside `consume`, on the consumer's thread; they hand their work to the event loop
and wait for it, so all state is touched by the loop alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from pymongo import AsyncMongoClient

from tidemark.config import Topology, faults
from tidemark.operators import build_pipeline
from tidemark.processor.kafka import clients, topics
from tidemark.processor.kafka.hanging import settled_offsets, unsettled
from tidemark.processor.kafka.positions import Positions, read_positions
from tidemark.processor.kafka.transaction import Transaction, abandoned_after, failure
from tidemark.processor.observability import metrics
from tidemark.processor.protocol.commit import Committer
from tidemark.processor.protocol.features import FeatureStep
from tidemark.processor.protocol.partition import Partition, Phase
from tidemark.processor.protocol.recovery import recover
from tidemark.processor.protocol.snapshotting import Snapshotter
from tidemark.processor.runtime.batch import BatchProcessor, by_partition
from tidemark.processor.runtime.control import (
    Control,
    Decision,
    HandBack,
    HandOff,
    SnapshotRequested,
)
from tidemark.processor.runtime.health import Health
from tidemark.processor.runtime.lag import LagGauges
from tidemark.processor.runtime.outages import (
    dependency,
    describe,
    recoverable,
    retry_budget,
    wait_out,
)
from tidemark.state import Checkpoints, Fenced, ensure_collections
from tidemark.state.names import checkpoint_id, state_collection
from tidemark.state.retry import retry_budget as budget_of_retries
from tidemark.state.snapshots import Snapshots

T = TypeVar("T")
log = structlog.get_logger("tidemark.worker")
# Messages per `consume`. Each partition's share is a batch with its own state read, fold
# and produce call; at 2,000 those per-batch costs were 5% of a worker's CPU at 100,000
# keys (BENCHMARKS.md, "CPU per event"). `consume` still returns what it has after 0.2 s.
BATCH = 8000
SETTLE_MARGIN = 2.0  # seconds for the markers of a transaction the broker just ended


class Worker:
    """Runs `topology` as one member of its consumer group until `stop()`."""

    def __init__(self, topology: Topology, owner: str | None = None) -> None:
        self.topology = topology
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.pipeline = build_pipeline(topology)
        self.assigned: set[int] = set()
        self.partitions: dict[int, Partition] = {}  # owned, for the current epoch
        # Assigned but not ours to process: handed off to an operator, found held at
        # assignment, or fenced without our acknowledgement; resumed on hand-back.
        self.held: set[int] = set()
        self._to_pause: set[int] = set()
        self._stopping = asyncio.Event()
        self.health = Health(topology, lambda: self.assigned)
        self._lag = LagGauges(topology.name, topology.source.topic)
        # The loop left on an error (or an injected crash): what is in hand is half done, so
        # nothing more is committed; rebalance callbacks only let go.
        self._broken = False
        # Waiting out an outage: nothing is owned, rebalance callbacks only let go, and what
        # is assigned meanwhile is recovered once the dependencies answer.
        self._degraded = False
        # An outage met inside a rebalance callback, raised by the loop after `consume`.
        self._failure: BaseException | None = None

    def stop(self) -> None:
        """Finish the batch in hand, commit, leave the group."""
        self.health.stopping = True
        self._stopping.set()

    async def run(self) -> None:
        t = self.topology
        self._loop = asyncio.get_running_loop()
        counts = await asyncio.to_thread(topics.check_topics, t)
        budget = retry_budget(t)
        # Server selection gives up within the retry budget, so an outage surfaces as an
        # error the worker can wait out instead of an operation blocked for 30 s.
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            t.mongo.uri,
            appname=self.owner,
            serverSelectionTimeoutMS=int(budget * 500),
            **t.mongo.client_args(),
        )
        self._mongo = mongo
        self._tx = Transaction(t, self.owner)
        self._settle = await asyncio.to_thread(abandoned_after, t) + SETTLE_MARGIN
        try:
            with budget_of_retries(budget):
                await self._run(t, mongo, counts)
        except BaseException:
            self._broken = True
            raise
        finally:
            if self._broken:
                # As after a crash: the open transaction is aborted (the broker would, after
                # its timeout) and the consumer leaves without committing anything.
                if hasattr(self, "_committer"):
                    self._committer.abandon()
                with contextlib.suppress(Exception, faults.Crash):
                    await self._tx.abort()
            if hasattr(self, "consumer"):
                await asyncio.to_thread(self.consumer.close)
            if hasattr(self, "_batches"):
                await asyncio.to_thread(self._batches.close)
            await mongo.close()
            log.info("worker_stopped", topology=t.name, owner=self.owner)

    async def _run(
        self, t: Topology, mongo: AsyncMongoClient[dict[str, Any]], counts: dict[str, int]
    ) -> None:
        db = mongo[t.mongo.database]
        await ensure_collections(db, t.name)
        self._checkpoints = Checkpoints(db, t.name)
        self._collection = db[state_collection(t.name)]
        self._snapshotter = Snapshotter(
            t, Snapshots(db, t.name, t.snapshots.chunk_bytes), self._checkpoints
        )
        features = await FeatureStep.open(t, db)
        self._committer = Committer(
            t, self._tx, self._checkpoints, self._snapshotter, self._drop, features
        )
        self._batches = BatchProcessor(
            t, self.pipeline, self._tx, topics.sink_partitioned(t, counts)
        )
        self._control = Control(t, self._checkpoints, self.owner)
        await self._tx.start()
        self._subscribe()
        log.info("worker_started", topology=t.name, owner=self.owner)
        beat = asyncio.create_task(
            self._control.heartbeat_forever(lambda: self.assigned, self.health.turned_within)
        )
        try:
            outage: BaseException | None = None
            while True:
                try:
                    if outage is not None:
                        if not await self._ride_out(outage):
                            self._broken = True  # stopped while waiting: nothing to commit
                            return
                        outage = None
                    await self._loop_until_stopped(beat)
                    return
                except Exception as exc:
                    if not recoverable(exc):
                        raise
                    outage = exc
        finally:
            beat.cancel()

    def _subscribe(self) -> None:
        self.health.joined = False
        self.consumer = clients.consumer(self.topology, self.owner)
        self.consumer.subscribe(
            [self.topology.source.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    async def _loop_until_stopped(self, beat: asyncio.Task[None]) -> None:
        c = self.topology.checkpoint
        last_commit = last_poll = time.monotonic()
        since_commit = 0
        batch = min(BATCH, c.max_records)
        while not self._stopping.is_set():
            self.health.turn()
            if beat.done():
                beat.result()  # the heartbeat died: its error stops the worker
                raise RuntimeError("the heartbeat task ended")
            messages = await asyncio.to_thread(self.consumer.consume, batch, 0.2)
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if messages:
                since_commit += await self._process(messages)
            self._apply_pauses()
            if time.monotonic() - last_poll >= c.interval:
                await self._carry_out(
                    await self._control.poll(self.assigned, self.partitions, self.held)
                )
                last_poll = time.monotonic()
            due = (
                since_commit >= c.max_records
                or time.monotonic() - last_commit >= c.interval
                # `max_dirty_keys` is waited for after a commit only (`backpressure`): past
                # it, commit now, or the keys would pile up until the interval ends.
                or self._committer.over_dirty_limit(self._owned())
            )
            if (since_commit and due) or self._committer.state_overdue(self._owned()):
                await self._commit(self.consumer.consumer_group_metadata())
                last_commit, since_commit = time.monotonic(), 0
                self._lag.report(self.consumer, self._owned())
                # Only right after a commit: the new transaction is empty, so waiting for
                # MongoDB cannot run it into the transaction timeout.
                await self._committer.backpressure(self._owned())
        await self._commit(self.consumer.consumer_group_metadata(), everything=True)

    # -- outages ------------------------------------------------------------------------

    async def _ride_out(self, outage: BaseException) -> bool:
        """Wait out a dependency that failed, then go on from the checkpoints; False if the
        worker was stopped meanwhile.

        Nothing is kept open while waiting: the transaction is aborted (or its producer
        replaced, which aborts it), every partition is dropped and paused. The consumer
        is polled between tries, so the group keeps this member and its assignment; after a
        Kafka failure the member rejoins anyway, since it cannot tell whether it was fenced.
        """
        started, what = time.monotonic(), dependency(outage)
        log.warning(
            "dependency_unavailable",
            dependency=what,
            error=describe(outage),
            partitions=sorted(self.partitions),
        )
        self._degraded = True
        self.health.waiting_for = what
        metrics.OUTAGES.labels(topology=self.topology.name, dependency=what).inc()
        self._committer.abandon()
        self._forget_owned()
        stopping = self._stopping.is_set
        if not await wait_out("kafka", self._end_transaction, self._idle, stopping):
            return False
        # An abort can end locally while the broker is still away; a consumer made then
        # would start in reconnect backoff and join late, so wait until the broker answers.
        if what == "kafka" and not await wait_out(
            "kafka", self._reach_broker, self._idle, stopping
        ):
            return False
        if not await wait_out("mongo", self._ping_mongo, self._idle, stopping):
            return False
        if what == "kafka":
            await asyncio.to_thread(self.consumer.close)  # its callbacks only let go
            self.assigned, self.held = set(), set()
            self._degraded = False
            self._subscribe()
        else:
            self._degraded = False
            await self.restart(sorted(self.assigned - self.held))
        self.health.waiting_for = None
        log.info(
            "dependency_recovered", dependency=what, seconds=round(time.monotonic() - started, 1)
        )
        return True

    def _forget_owned(self) -> None:
        """Let go of every partition in hand (they are recovered after the outage)."""
        for part in self.partitions.values():
            if part.owned:
                part.move(Phase.DROPPED)
        self.partitions.clear()
        self._to_pause = set(self.assigned)
        with contextlib.suppress(KafkaException):
            self._apply_pauses()

    async def _end_transaction(self) -> None:
        """Abort the open transaction; if the producer cannot, replace it."""
        try:
            await self._tx.abort()
        except Exception as exc:
            if not recoverable(exc):
                raise
            await self._tx.renew()

    async def _reach_broker(self) -> None:
        try:
            await asyncio.to_thread(self.consumer.list_topics, self.topology.source.topic, 5)
        except KafkaException as exc:
            raise failure("Kafka metadata", exc) from exc

    async def _ping_mongo(self) -> None:
        await self._mongo.admin.command("ping")

    async def _idle(self, seconds: float) -> None:
        """Pause between tries, polling the consumer: it stays in the group, and its
        rebalance callbacks run (while degraded, they only note the assignment)."""
        self.health.turn()
        with contextlib.suppress(KafkaException):
            await asyncio.to_thread(self.consumer.consume, BATCH, seconds)
        self._failure = None  # whatever a callback met now is part of this same outage
        self._apply_pauses()

    def _owned(self) -> list[Partition]:
        return list(self.partitions.values())

    async def _process(self, messages: list[Message]) -> int:
        batches = by_partition(messages)
        for number, batch in batches.items():
            part = self.partitions.get(number)
            if part is not None and part.processing:
                await self._batches.run(part, batch)
                if part.phase is Phase.FAILED:
                    self.pause(number)
        return sum(len(b) for b in batches.values())

    async def _commit(self, group_metadata: object, everything: bool = False) -> bool:
        """Commit; if the transaction aborted, rewind every partition to its checkpoint."""
        if await self._committer.commit(self._owned(), group_metadata, everything):
            return True
        if self._committer.left_group:
            # Out of the group (frozen past the session timeout, say): let everything go
            # and wait for the rebalance the consumer is about to deliver. Nothing is
            # assigned or held until then, so no hand-back can take a partition back.
            log.warning("left_the_group", partitions=sorted(self.partitions))
            self.health.joined = False
            for number in list(self.partitions):
                self._drop(self.partitions[number], "this member left the consumer group")
            self.assigned, self.held = set(), set()
            return False
        await self.restart(await self._still_ours(list(self.partitions)))
        return False

    async def _still_ours(self, numbers: list[int]) -> list[int]:
        """Of these partitions, those whose epoch is still ours; the others are dropped.

        A rewind after an abort must not take back what a newer owner took meanwhile (a
        member the group moved on from while this one was frozen, whose commit then timed
        out rather than being refused; or an operator): acquiring would fence that owner.
        """
        parts = [self.partitions[n] for n in numbers]
        current = await self._checkpoints.current([p.checkpoint.id for p in parts])
        mine = []
        for part in parts:
            cp = current.get(part.checkpoint.id)
            if cp is not None and cp.epoch == part.epoch:
                mine.append(part.number)
            else:
                self._drop(part, "a newer owner took it while this worker was away")
        return mine

    # -- ownership ----------------------------------------------------------------------

    async def restart(self, numbers: list[int]) -> None:
        """Recover these assigned partitions and read each from its checkpoint again."""
        topic = self.topology.source.topic
        kafka = await asyncio.to_thread(self._positions, self.consumer, numbers)
        for number in numbers:
            part = await self._take(number, kafka[number])
            if part is None or part.phase is Phase.FAILED:
                self.pause(number)
                continue
            assert part.checkpoint.offset is not None
            tp = TopicPartition(topic, number, part.checkpoint.offset)
            self.consumer.seek(tp)
            self.consumer.resume([tp])

    async def _take(self, number: int, kafka: Positions) -> Partition | None:
        """A new epoch of partition `number`; None if an operator holds it."""
        old = self.partitions.pop(number, None)
        if old is not None and old.owned:
            old.move(Phase.DROPPED)  # rewound, or handed back: its memory is stale
        started = time.perf_counter()
        part = await recover(
            self.topology,
            self._checkpoints,
            self._collection,
            self.pipeline.stateful_ids,
            self._snapshotter,
            number,
            self.owner,
            kafka,
        )
        if part is None:
            self.held.add(number)
            log.info("partition_held", partition=number)
            return None
        self.partitions[number] = part
        self.held.discard(number)
        metrics.RECOVERIES.labels(self.topology.name).inc()
        metrics.RECOVERY_SECONDS.labels(self.topology.name).observe(time.perf_counter() - started)
        log.info(
            "partition_assigned",
            partition=number,
            epoch=part.epoch,
            start=part.checkpoint.offset,
            emit_from=part.emit_from,
            cut_from=part.cut_from,
            phase=str(part.phase),
        )
        return part

    def _drop(self, part: Partition, reason: str) -> None:
        """A newer epoch took the partition: stop processing it, keep nothing of it."""
        if self.partitions.get(part.number) is not part or not part.owned:
            return  # already replaced by a newer epoch
        del self.partitions[part.number]
        part.move(Phase.DROPPED)
        self._lag.forget([part.number])
        self.pause(part.number)
        # An operator may have fenced it without our acknowledgement (we looked dead); the
        # poll resumes it when the operator hands it back, not if a group member took it.
        self.held.add(part.number)
        metrics.FENCED.labels(self.topology.name, str(part.number)).inc()
        log.warning("partition_dropped", partition=part.number, reason=reason)

    async def _carry_out(self, decisions: list[Decision]) -> None:
        handed_back = []
        for decision in decisions:
            match decision:
                case HandOff(number, handoff):
                    await self._hand_off(number)
                    await self._control.acknowledge(number, handoff)
                case HandBack(number):
                    handed_back.append(number)
                case SnapshotRequested(number, request):
                    if (part := self.partitions.get(number)) is not None:
                        part.note(snapshot_request=request)
        if handed_back:
            log.info("partitions_handed_back", partitions=handed_back)
            await self.restart(handed_back)

    async def _hand_off(self, number: int) -> None:
        """Pause at a committed point: everything processed is committed and checkpointed."""
        self.pause(number)
        part, committed = self.partitions.get(number), False
        if part is not None:
            committed = await self._commit(self.consumer.consumer_group_metadata(), True)
            part = self.partitions.pop(number, None)  # a rewind may have replaced it
        if part is not None and part.owned:
            if committed:
                await self._mark_clean(part)
            part.move(Phase.HANDED_OFF)
        self.held.add(number)
        log.info("partition_handed_off", partition=number)

    def pause(self, number: int) -> None:
        """Pause a partition at the next turn of the loop, outside any rebalance callback."""
        self._to_pause.add(number)

    def _apply_pauses(self) -> None:
        if self._to_pause:
            topic = self.topology.source.topic
            self.consumer.pause([TopicPartition(topic, n) for n in self._to_pause])
            self._to_pause.clear()

    # -- rebalance callbacks: on the consumer's thread, from inside `consume` ------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._broken or faults.crashed():
            return
        self.health.joined = True
        topic = self.topology.source.topic
        numbers = [tp.partition for tp in partitions]
        # Rebound, not mutated: the heartbeat task reads it while this thread runs.
        self.assigned = self.assigned | set(numbers)
        taken: dict[int, Partition | None] = dict.fromkeys(numbers)
        if not self._degraded:
            try:
                kafka = self._positions(consumer, numbers)
                taken = {n: self._call(self._take(n, kafka[n])) for n in numbers}
            except Exception as exc:
                if not recoverable(exc):
                    raise
                # Assigned paused; the loop raises this and recovers them once it can.
                self._failure = exc
                taken = dict.fromkeys(numbers)
        starts = [
            TopicPartition(topic, n, p.checkpoint.offset)
            if p is not None and p.checkpoint.offset is not None
            else TopicPartition(topic, n)  # held or not recovered: paused below, never read
            for n, p in taken.items()
        ]
        consumer.assign(starts)
        # librdkafka keeps a partition's pause across a new assignment: set both ways.
        idle = [TopicPartition(topic, n) for n, p in taken.items() if p is None or not p.processing]
        busy = [
            TopicPartition(topic, n) for n, p in taken.items() if p is not None and p.processing
        ]
        if idle:
            consumer.pause(idle)
        if busy:
            consumer.resume(busy)

    def _positions(self, consumer: Consumer, numbers: list[int]) -> dict[int, Positions]:
        """`read_positions`, waiting for committed offsets to settle only as long as an open
        transaction can last; offsets still pending then belong to a commit the broker left
        without markers, which this worker reseals if it was its own (`hanging.py`)."""
        topic = self.topology.source.topic
        try:
            return read_positions(consumer, topic, numbers, self._settle)
        except KafkaException as exc:
            if not unsettled(exc) or not self._tx.last_offsets:
                raise
            log.warning("committed_offsets_unsettled", partitions=numbers, seconds=self._settle)
            settled = settled_offsets(self.topology, self._tx.last_offsets)
            if not self._call(self._tx.reseal(settled, consumer.consumer_group_metadata())):
                raise
        return read_positions(consumer, topic, numbers, self._settle)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._broken or faults.crashed():
            return
        if not self._degraded:
            try:
                # Committed or aborted, these partitions are given up: nothing to rewind.
                parts = self._owned()
                metadata = consumer.consumer_group_metadata()
                committed = self._call(self._committer.commit(parts, metadata, everything=True))
                self.assigned = set()  # before the release: the heartbeat must not stamp them
                numbers = [tp.partition for tp in partitions]
                self._call(self._release(numbers, parts if committed else []))
            except Exception as exc:
                if not recoverable(exc):
                    raise
                self._failure = exc  # let go without a commit, like a lost assignment
        self._forget_all()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._broken or faults.crashed():
            return
        self.health.joined = False
        if not self._degraded:
            try:
                self._call(self._committer.abort())
            except Exception as exc:
                if not recoverable(exc):
                    raise
                self._failure = exc
        self._forget_all()

    async def _release(self, numbers: list[int], committed: list[Partition]) -> None:
        """Give partitions up: those whose last state checkpoint completed are left clean."""
        for part in committed:
            await self._mark_clean(part)
        t = self.topology
        ids = [checkpoint_id(t.name, t.source.topic, n) for n in numbers]
        await self._checkpoints.release(ids, self.owner)

    async def _mark_clean(self, part: Partition) -> None:
        """After a completed final commit: the next owner need not distrust the state."""
        if part.owned and part.checkpointable() and not part.pending():
            with contextlib.suppress(Fenced):
                await self._checkpoints.mark_clean(part.checkpoint)

    def _forget_all(self) -> None:
        self._lag.forget(list(self.partitions))
        for part in self.partitions.values():
            if part.owned:
                part.move(Phase.DROPPED)
        self.partitions.clear()
        self._to_pause.clear()
        self.assigned = set()
        self.held.clear()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
