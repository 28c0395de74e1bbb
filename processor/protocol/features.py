"""Step 3b of the commit protocol: materialize the committed feature rows.

After each Kafka commit the rows of the records it made visible are handed to a writer
task beside processing. While a write is in flight, rows handed over meanwhile are merged
per entity into the next one, so a slow MongoDB means fewer, larger writes (each entity
once per write) rather than a commit that waits; past `checkpoint.max_dirty_keys` pending
entities the commit does wait, which bounds memory. A state checkpoint waits until every
row handed over before its cut is written: feature rows reach MongoDB before the state
that produced them. Recovery skips a record whose key's state is past it, and without this
order a crash could leave the row of such a record unwritten for good. Rows are written
during recovery too (unlike outputs below C): the event-time guard makes a second write of
a row a no-op, never a regression.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config import Topology, faults
from tidemark.config.throttle import Throttle
from tidemark.features.materialize import FeatureBuffer, FeatureWriter
from tidemark.features.registry import register
from tidemark.features.validation import Row
from tidemark.processor.observability import metrics
from tidemark.processor.protocol.partition import Partition

log = structlog.get_logger("tidemark.features")


class FeatureStep:
    """Writes the rows of committed records, one write at a time, in commit order."""

    def __init__(self, topology: Topology, writer: FeatureWriter) -> None:
        group = writer.group
        self._writer = writer
        self._sla = group.freshness_sla
        self._throttle = Throttle(60.0)  # a breach is one warning per minute, not a flood
        labels = (topology.name, group.group, str(group.version))
        self._stored = metrics.FEATURE_ROWS.labels(*labels, "stored")
        self._stale = metrics.FEATURE_ROWS.labels(*labels, "stale")
        self._freshness = metrics.FEATURE_FRESHNESS.labels(*labels)
        self._limit = topology.checkpoint.max_dirty_keys
        self._pending = FeatureBuffer(keep_all=group.history is not None)
        self._handed = self._done = 0  # commits handed over, and written
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, topology: Topology, db: AsyncDatabase[Any]) -> FeatureStep | None:
        """Register the topology's feature group; None if it has no features sink."""
        group = topology.feature_group
        if group is None:
            return None
        await register(db, topology)
        return cls(topology, FeatureWriter(db, group))

    async def start(self, parts: Iterable[Partition]) -> None:
        """Hand over the rows these partitions buffered up to the commit just made."""
        self._raise_failure()
        for part in parts:
            for chain in part.features.take():
                for row in chain:
                    self._pending.add(row)
        self._handed += 1
        if self._task is None:
            self._task = asyncio.create_task(self._write_forever())
        async with self._progress:
            self._progress.notify_all()
        if len(self._pending.chains) >= self._limit:
            await self.written()

    async def _write_forever(self) -> None:
        try:
            while True:
                async with self._progress:
                    await self._progress.wait_for(lambda: self._done < self._handed)
                handed, chains = self._handed, self._pending.take()
                if chains:
                    await self._write(chains)
                async with self._progress:
                    self._done = handed
                    self._progress.notify_all()
        finally:  # a failure wakes the waiters, who raise it
            async with self._progress:
                self._progress.notify_all()

    async def _write(self, chains: list[list[Row]]) -> None:
        faults.point("write_features")
        written = await self._writer.write(chains)
        self._stored.inc(written.stored)
        self._stale.inc(written.stale)
        for lag in written.lags_ms:
            self._freshness.observe(lag / 1000)
        worst = max(written.lags_ms, default=0) / 1000
        if self._sla is not None and worst > self._sla:
            held = self._throttle.allow("sla")
            if held is not None:
                log.warning(
                    "feature_freshness_sla_breached",
                    group=self._writer.group.group,
                    version=self._writer.group.version,
                    lag_s=round(worst, 3),
                    sla_s=self._sla,
                    breaches_held_back=held,
                )

    async def written(self) -> None:
        """Wait until every row handed over so far is written; a failed write raises."""
        target = self._handed
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target or self._failed())
        self._raise_failure()

    def _failed(self) -> bool:
        return self._task is not None and self._task.done()

    def _raise_failure(self) -> None:
        if self._task is not None and self._task.done():
            task, self._task = self._task, None
            task.result()  # the write's error; a loop that ends otherwise is a bug
            raise AssertionError("the feature writer stopped")

    def abandon(self) -> None:
        """The owner is going down on an error: the writes are idempotent, let them go."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
