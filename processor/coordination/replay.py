"""Rebuild one partition while the rest of the group keeps running.

The replay takes the partition from the group (`handoff.py`), restores a starting state
(a snapshot, or nothing when replaying from the start), and reprocesses its records up to
the end offset seen at the start with the same batch processor and commit protocol as a
worker: outputs and Kafka's committed offset in one transaction, then state, then the
checkpoint. Kafka accepts transactional offset commits from a producer outside the group
(generation -1), so a replay killed midway is resumed like a worker recovery. Outputs of
offsets below C (committed before the replay) are suppressed unless `--emit`; outputs of
newer offsets are always produced, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import structlog
from confluent_kafka import TopicPartition
from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config import Topology
from tidemark.config.errors import TidemarkError
from tidemark.operators import build_pipeline
from tidemark.processor.coordination.handoff import give_back, operator_name, take_over
from tidemark.processor.kafka import clients, topics
from tidemark.processor.kafka.positions import source_positions
from tidemark.processor.kafka.transaction import Transaction
from tidemark.processor.observability import metrics
from tidemark.processor.observability.progress import progress_bar
from tidemark.processor.protocol.commit import Committer
from tidemark.processor.protocol.features import FeatureStep
from tidemark.processor.protocol.partition import Partition, Phase
from tidemark.processor.protocol.recovery import new_partition
from tidemark.processor.protocol.snapshotting import Snapshotter
from tidemark.processor.runtime.batch import BatchProcessor, by_partition
from tidemark.state import Checkpoint, Checkpoints
from tidemark.state.names import state_collection
from tidemark.state.snapshots import Manifest, Snapshots

log = structlog.get_logger("tidemark.replay")
From = Literal["snapshot", "start", "offset", "time"]


class ReplayError(TidemarkError):
    """The replay cannot run as asked, or failed; the message says why."""


@dataclass(frozen=True)
class Request:
    """What the operator asked for."""

    partition: int
    source: From
    version: int | None = None
    offset: int | None = None
    time: dt.datetime | None = None
    to_offset: int | None = None
    emit: bool = False


@dataclass(frozen=True)
class Plan:
    """What a replay will do, decided from the partition's state when it starts."""

    partition: int
    restore_version: int | None  # restore this snapshot first
    clear_state: bool  # start from empty state
    begin: int  # first offset read
    emit_from: int  # outputs of offsets below this are suppressed
    end: int  # offsets up to here (exclusive) are processed
    checkpoint: int | None  # W before the replay
    committed: int | None  # C before the replay
    log_start: int
    log_end: int

    def describe(self) -> dict[str, Any]:
        return asdict(self)


class Replay:
    """One replay of one partition, through the worker's batch processor and commit protocol."""

    def __init__(
        self, topology: Topology, db: AsyncDatabase[Any], progress: bool | None = None
    ) -> None:
        self.topology = topology
        self._db = db
        self._progress = progress
        self._checkpoints = Checkpoints(db, topology.name)
        self._snapshots = Snapshots(db, topology.name, topology.snapshots.chunk_bytes)
        self._fenced: str | None = None

    def _drop(self, part: Partition, reason: str) -> None:
        if part.owned:
            part.move(Phase.DROPPED)
        self._fenced = reason

    async def plan(self, request: Request) -> Plan:
        """Decide start, end and what to restore; changes nothing."""
        t, p = self.topology, request.partition
        pos = (await asyncio.to_thread(source_positions, t, [p], request.time))[p]
        low, high, committed, at_time = pos.low, pos.high, pos.committed, pos.at_time
        cp = await self._checkpoints.get(t.source.topic, p)
        checkpoint = cp.offset if cp else None
        target = request.offset if request.source == "offset" else at_time
        manifest: Manifest | None = None
        if request.source == "snapshot":
            manifest = await self._snapshots.get(p, request.version)
        elif request.source in ("offset", "time"):
            assert target is not None
            manifest = await self._snapshots.at_or_before(p, target)
            if manifest is None and low > 0:
                raise ReplayError(
                    f"no snapshot at or before offset {target} and the log starts at {low}: "
                    "the records before it are gone"
                )
        begin = manifest.offset if manifest else low
        if request.source == "start" and low > 0:
            raise ReplayError(
                f"the log of partition {p} starts at {low}: the records before it are gone "
                "(retention); replay from a snapshot instead"
            )
        if begin < low:
            raise ReplayError(f"offset {begin} is before the log start {low}: records are gone")
        end = request.to_offset if request.to_offset is not None else high
        if not begin <= end <= high:
            raise ReplayError(f"end offset {end} must be within [{begin}, {high}]")
        silent = target if target is not None else begin
        emit_from = committed if committed is not None else begin
        if request.emit:
            emit_from = min(silent, emit_from)
        return Plan(
            partition=p,
            restore_version=manifest.version if manifest else None,
            clear_state=manifest is None,
            begin=begin,
            emit_from=emit_from,
            end=end,
            checkpoint=checkpoint,
            committed=committed,
            log_start=low,
            log_end=high,
        )

    async def run(self, request: Request, force: bool = False, ack_timeout: float = 60.0) -> Plan:
        """Take the partition, rebuild it, give it back; the plan it carried out.

        A snapshot is verified before the partition is taken: a corrupt one changes nothing.
        """
        t, number = self.topology, request.partition
        if request.source == "snapshot":
            await self._snapshots.verify(await self._snapshots.get(number, request.version))
        cp, previous = await take_over(
            t, self._checkpoints, number, "replaying", operator_name("replay"), force, ack_timeout
        )
        changed = False
        try:
            plan = await self.plan(request)  # C again: the owner committed before pausing
            log.info("replay_started", **plan.describe())
            changed = True
            cp = await self._restore(plan, cp)
            part = await self._reprocess(plan, cp)
        except BaseException as exc:  # interrupted too: hand it back as failed, saying why
            if self._fenced is None:
                reason = f"replay failed: {type(exc).__name__}: {exc}"[:2000]
                status = "failed" if changed else previous
                await give_back(self._checkpoints, cp, status, reason if changed else None)
            raise
        if part.phase is Phase.FAILED:
            await give_back(self._checkpoints, part.checkpoint, "failed", part.last_error)
            raise ReplayError(f"partition {number} failed again: {part.last_error}")
        await give_back(self._checkpoints, part.checkpoint, "running", clean=True)
        log.info("replay_finished", partition=number, end=plan.end)
        return plan

    async def _restore(self, plan: Plan, cp: Checkpoint) -> Checkpoint:
        """Set the state and W to where the replay begins; the checkpoint as it is then."""
        # Older documents are void from here: a zombie's write after the clear is ignored.
        await self._checkpoints.raise_floor(cp)
        cp = dataclasses.replace(cp, floor=cp.epoch)
        if plan.restore_version is not None:
            manifest = await self._snapshots.get(plan.partition, plan.restore_version)
            with progress_bar(manifest.keys, "restore", self._progress) as bar:
                keys = await self._snapshots.restore(manifest, cp.epoch, bar.update)
            log.info("snapshot_restored", version=manifest.version, keys=keys)
        elif plan.clear_state:
            await self._snapshots.clear(plan.partition, cp.epoch)
            await self._snapshots.forget_after(plan.partition, -1)
        await self._checkpoints.advance(cp, plan.begin)
        cp = dataclasses.replace(cp, offset=plan.begin)
        if self.topology.snapshots.mode == "incremental":
            await self._checkpoints.changelog_reaches(cp, plan.begin)
            cp = dataclasses.replace(cp, changelog=plan.begin)
        return cp

    async def _reprocess(self, plan: Plan, cp: Checkpoint) -> Partition:
        t = self.topology
        pipeline = build_pipeline(t)
        counts = await asyncio.to_thread(topics.check_topics, t)
        part = new_partition(
            t,
            self._db[state_collection(t.name)],
            pipeline.stateful_ids,
            cp,
            emit_from=plan.emit_from,
            commit_floor=plan.committed or 0,
            cut_from=plan.begin,  # the state was restored or cleared: nothing is past W
        )
        snapshotter = Snapshotter(t, self._snapshots, self._checkpoints)
        await snapshotter.adopt(part)
        tx = Transaction(t, operator_name("replay"))
        features = await FeatureStep.open(t, self._db)
        committer = Committer(t, tx, self._checkpoints, snapshotter, self._drop, features)
        await tx.start()
        batches = BatchProcessor(t, pipeline, tx, topics.sink_partitioned(t, counts))
        consumer = clients.reader(t)
        tp = TopicPartition(t.source.topic, plan.partition, plan.begin)
        consumer.assign([tp])
        bar = progress_bar(
            plan.end - plan.begin, f"replay partition {plan.partition}", self._progress
        )
        labels = (t.name, str(plan.partition))
        replayed, progress = (
            metrics.REPLAYED.labels(*labels),
            metrics.REPLAY_PROGRESS.labels(*labels),
        )
        progress.set(0.0)
        try:
            position, last_commit = plan.begin, time.monotonic()
            while position < plan.end and part.processing:
                messages = await asyncio.to_thread(consumer.consume, 2000, 0.5)
                batch = by_partition(messages, plan.end).get(plan.partition)
                if batch:
                    await batches.run(part, batch)
                now = (await asyncio.to_thread(consumer.position, [tp]))[0].offset
                if now >= 0:
                    bar.update(min(now, plan.end) - position)
                    position = max(position, now)
                    progress.set(_ratio(position - plan.begin, plan.end - plan.begin))
                if batch:
                    replayed.inc(len(batch))
                if time.monotonic() - last_commit >= t.checkpoint.interval:
                    await self._commit(committer, part, consumer)
                    last_commit = time.monotonic()
            if part.processing:
                # Past the last record only transaction markers or aborted records remain.
                part.processed(plan.end)
            await self._commit(committer, part, consumer, everything=True)
            progress.set(1.0)
        finally:
            bar.close()
            await asyncio.to_thread(consumer.close)
            await asyncio.to_thread(batches.close)
        return part

    async def _commit(
        self, committer: Committer, part: Partition, consumer: Any, everything: bool = False
    ) -> None:
        metadata = consumer.consumer_group_metadata()
        ok = await committer.commit([part], metadata, everything)
        if self._fenced is not None:
            raise ReplayError(f"another operation took the partition: {self._fenced}")
        if not ok:
            raise ReplayError("a Kafka transaction of the replay aborted; run the replay again")
        await committer.backpressure([part])


def _ratio(done: int, total: int) -> float:
    return 1.0 if total <= 0 else min(1.0, done / total)
