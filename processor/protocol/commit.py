"""The commit protocol: outputs, Kafka offsets, state and checkpoints, in one order.

Every `checkpoint.interval` (or `checkpoint.max_records` records) the owner commits:

1. send_offsets        The consumer offsets go into the open Kafka transaction. This starts
                       the transaction on the broker if no output did, so any transaction
                       that passes step 2 began before it: an operator that fenced the owner
                       knows it ended `transaction.timeout.ms` later (coordination/handoff.py).
2. check_epochs        One query: is every partition's epoch still ours? If a newer owner
                       took one, the transaction is aborted, that partition dropped and the
                       others rewound to their checkpoints by the caller.
3. commit_transaction  Outputs, dead letters and input progress (C) become visible together.
   (seal)              A failed step aborts; the producer seals what the abort may have
                       left open before anything else (`processor/kafka/hanging.py`).
3b. write_features     With a features sink: the committed records' rows go to a writer
                       beside processing (`features.py`); a state checkpoint waits for them.

When a state checkpoint is due (`checkpoint.state_interval`, `max_dirty_keys`, a failure or
a snapshot request to record), each partition's dirty keys and position are cut right after
step 3, and a task beside processing runs, per partition:

4. flush_state         The dirty keys, each write conditional on the epoch, stamped `off`.
5. move_checkpoint     W moves to the cut's offset, conditional on the epoch.
6. append_changelog,   `snapshotting.py`: nothing flushes the partition meanwhile, so what
   take_snapshot       they read from MongoDB is the cut at W.
7. state_checkpoint_done

The step names are the fault points of `tidemark.config.faults`. A crash between any two
is repaired by recovery (`recovery.py`): [W, C) is re-applied for state only. The crash
table of docs/ARCHITECTURE.md says why each point is safe.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog
from confluent_kafka import TopicPartition

from tidemark.config import Topology, faults
from tidemark.processor.kafka.transaction import Transaction
from tidemark.processor.observability import metrics
from tidemark.processor.protocol.features import FeatureStep
from tidemark.processor.protocol.partition import Partition, Phase
from tidemark.processor.protocol.snapshotting import Snapshotter
from tidemark.state import Checkpoints, Fenced
from tidemark.state.chunks import Record

log = structlog.get_logger("tidemark.commit")
OnFenced = Callable[[Partition, str], None]


class Committer:
    """Runs the commit protocol for the partitions of one owner (a worker or a replay)."""

    def __init__(
        self,
        topology: Topology,
        transaction: Transaction,
        checkpoints: Checkpoints,
        snapshotter: Snapshotter,
        on_fenced: OnFenced,
        features: FeatureStep | None = None,
    ) -> None:
        self._topology = topology
        self._features = features
        self._tx = transaction
        self._checkpoints = checkpoints
        self._snapshotter = snapshotter
        self._on_fenced = on_fenced
        self._last_state = time.monotonic()
        self._state_task: asyncio.Task[None] | None = None
        # A partition fenced while the state task ran may have outputs in the open
        # transaction that no epoch check will look at again: the next commit aborts.
        self._tainted = False
        # The last abort said this member is no longer in the consumer group: its
        # partitions are someone else's, so it must not take them again before the group
        # has assigned it any (a rewind would fence their new owner).
        self.left_group = False

    async def commit(
        self, parts: Iterable[Partition], group_metadata: object, everything: bool = False
    ) -> bool:
        """Commit these partitions' progress; False if the transaction was aborted instead
        (the caller then rewinds them to their checkpoints, unless `left_group`).

        `everything`: a state checkpoint too, waited for (before partitions are given up).
        The group metadata comes from the caller: inside a rebalance callback the consumer
        may only be called from the callback's thread.
        """
        parts = list(parts)
        self.left_group = False
        if everything:
            await self.settle()
        elif self._state_task is not None and self._state_task.done():
            await self._settle_state()
        if self._tainted:
            return await self.abort()
        with_state = everything or self.state_due(parts)
        pending = [p for p in parts if p.owned and p.pending()]
        if pending:
            if not await self._commit_kafka(pending, group_metadata):
                return False
            if with_state and self._state_task is None:
                self._start_state_checkpoint(pending)
        if everything:
            await self.settle()
        return True

    async def _commit_kafka(self, parts: list[Partition], group_metadata: object) -> bool:
        """Steps 1 to 3; False (and the transaction aborted) if any of them failed."""
        started = step = time.perf_counter()
        topic = self._topology.source.topic
        offsets = [
            TopicPartition(topic, p.number, offset)
            for p in parts
            if (offset := p.kafka_offset()) is not None
        ]
        faults.point("send_offsets")
        if offsets and not await self._tx.send_offsets(offsets, group_metadata):
            return await self.abort()
        step = self._timed("send_offsets", step)
        faults.point("check_epochs")
        fenced = await self._fenced(parts)
        step = self._timed("check_epochs", step)
        if fenced:
            for part in fenced:
                self._on_fenced(part, "epoch moved on before commit")
            return await self.abort()
        faults.point("commit_transaction")
        if not await self._tx.commit():
            return await self.abort()
        step = self._timed("commit_transaction", step)
        if self._features is not None:
            await self._features.start(parts)
            self._timed("write_features_wait", step)
        self._timed("total", started)
        metrics.COMMITS.labels(self._topology.name).inc()
        return True

    def _timed(self, step: str, since: float) -> float:
        """Observe how long `step` took since `since`; now, for the next step."""
        now = time.perf_counter()
        metrics.COMMIT_SECONDS.labels(self._topology.name, step).observe(now - since)
        return now

    async def abort(self) -> bool:
        """Abort the open transaction and wait for the state checkpoint in flight; False.

        Whatever that checkpoint met is settled by the abort: the caller rewinds (or lets
        go of) every partition anyway, so no taint carries over to the next commit.
        """
        self.left_group = self._tx.left_group
        await self._tx.abort()
        await self.settle()
        self._tainted = False
        return False

    async def _fenced(self, parts: list[Partition]) -> list[Partition]:
        current = await self._checkpoints.current([p.checkpoint.id for p in parts])
        return [
            p for p in parts if (cp := current.get(p.checkpoint.id)) is None or cp.epoch != p.epoch
        ]

    def _start_state_checkpoint(self, parts: list[Partition]) -> None:
        # The cut is taken here, right after the Kafka commit; processing goes on meanwhile.
        cuts = [_Cut.take(p) for p in parts if p.checkpointable() or p.phase is Phase.FAILED]
        self._state_task = asyncio.create_task(self._checkpoint_state(cuts))
        self._last_state = time.monotonic()

    async def _checkpoint_state(self, cuts: list[_Cut]) -> None:
        if self._features is not None:
            try:
                await self._features.written()  # the cut's feature rows before its state
            except BaseException:
                for cut in cuts:  # never to be written: a crash or a failed feature write
                    cut.drop()
                raise
        await asyncio.gather(*(self._checkpoint_partition(c) for c in cuts))
        faults.point("state_checkpoint_done")

    async def _checkpoint_partition(self, cut: _Cut) -> None:
        """Steps 4 to 6 for one partition."""
        part, offset = cut.part, cut.offset
        try:
            step = time.perf_counter()
            flushed = await cut.write  # step 4: `flush_state` before each update command
            step = self._timed("flush_state", step)
            metrics.FLUSH_DOCUMENTS.labels(self._topology.name).observe(cut.documents)
            if offset is None or not part.owned:
                return
            faults.point("move_checkpoint")
            if part.phase is Phase.FAILED:
                error = part.last_error or "too many consecutive failures"
                await self._checkpoints.mark_failed(
                    part.checkpoint, offset, error, cut.dead_letters
                )
                part.note(offset=offset, status="failed", error=error)
            else:
                await self._checkpoints.advance(part.checkpoint, offset, cut.dead_letters)
                part.note(offset=offset)
            step = self._timed("move_checkpoint", step)
            if not cut.consistent:
                return  # a failure recorded at W: no cut to snapshot or sweep there
            # The changelog may read deletes back from MongoDB: sweep them after it.
            await self._snapshotter.after_checkpoint(part, offset, flushed)
            self._timed("changelog_and_snapshot", step)
            if part.store.tombstones:
                await part.store.sweep_tombstones(part.epoch, offset)
        except Fenced as exc:
            self._tainted = True
            self._on_fenced(part, str(exc))

    async def settle(self) -> None:
        """Wait for the state checkpoint in flight and every feature row handed over; a
        failure is raised here."""
        await self._settle_state()
        if self._features is not None:
            await self._features.written()

    async def _settle_state(self) -> None:
        task, self._state_task = self._state_task, None
        if task is not None:
            await task

    def abandon(self) -> None:
        """Stop caring about the state checkpoint in flight (the owner is going down on an
        error): cancel it and retrieve its outcome. Its writes are idempotent and fenced,
        so whatever of them landed is harmless."""
        task, self._state_task = self._state_task, None
        if task is not None:
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if self._features is not None:
            self._features.abandon()

    def state_due(self, parts: Iterable[Partition]) -> bool:
        """Whether the next commit should start a state checkpoint."""
        checkpoint = self._topology.checkpoint
        parts = list(parts)
        idle = self._state_task is None or self._state_task.done()
        return idle and (
            time.monotonic() - self._last_state >= checkpoint.state_interval
            or _dirty(parts) >= checkpoint.max_dirty_keys
            or any(p.phase is Phase.FAILED and p.checkpoint.status != "failed" for p in parts)
            or any(p.snapshot_request is not None and p.checkpointable() for p in parts)
        )

    def state_overdue(self, parts: Iterable[Partition]) -> bool:
        """A state checkpoint is due and has something to write, even with no new records."""
        parts = list(parts)
        return self.state_due(parts) and any(p.owned and p.pending() for p in parts)

    def over_dirty_limit(self, parts: Iterable[Partition]) -> bool:
        """Past `max_dirty_keys`: the worker should commit, then wait (`backpressure`)."""
        return _dirty(parts) >= self._topology.checkpoint.max_dirty_keys

    async def backpressure(self, parts: Iterable[Partition]) -> None:
        """Past `max_dirty_keys` with a state checkpoint still running, wait for it.

        This bounds memory (dirty plus in-flight keys) and how far W may lag C, so a slow
        MongoDB slows processing instead of growing memory and recovery time without end.
        """
        if self._state_task is not None and self.over_dirty_limit(parts):
            await self._settle_state()


def _dirty(parts: Iterable[Partition]) -> int:
    """Dirty keys a state checkpoint can write (not those of a partition re-applying
    [W, C): they wait until it passes `cut_from`)."""
    return sum(p.store.dirty_count for p in parts if p.checkpointable())


@dataclass
class _Cut:
    """What a state checkpoint writes for one partition, taken right after a Kafka commit."""

    part: Partition
    offset: int | None
    write: Awaitable[Iterable[Record]]
    dead_letters: int
    documents: int = 0  # state documents the write sends
    consistent: bool = True  # the state in MongoDB is a cut at `offset` once written

    def drop(self) -> None:
        """Give up the write without running it."""
        if inspect.iscoroutine(self.write):
            self.write.close()

    @classmethod
    def take(cls, part: Partition) -> _Cut:
        dead_letters, part.dead_letters = part.dead_letters, 0
        if part.checkpointable():
            documents, cut = part.store.dirty_count, part.cut_offset()
            return cls(part, cut, part.store.flush(part.epoch, cut), dead_letters, documents)
        # Failed while re-applying [W, C): record the failure at W and flush nothing, since
        # keys of a crashed owner's partial flush may lie between W and the position.
        return cls(part, part.checkpoint.offset, _nothing(), dead_letters, 0, consistent=False)


async def _nothing() -> Iterable[Record]:
    return ()
