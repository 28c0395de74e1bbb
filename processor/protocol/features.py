"""Step 3b of the commit protocol: materialize the committed feature rows.

Right after a Kafka transaction commits, the rows its records produced are written by a
task beside processing. The next commit waits for it: one write in flight bounds memory and
lets a slow MongoDB slow processing. A state checkpoint waits for it before it flushes, so
feature rows reach MongoDB before the state that produced them: recovery skips a record
whose key's state is past it, and without this order a crash could leave the row of such a
record unwritten for good. Rows are written during recovery too (unlike outputs below C):
the event-time guard makes a second write of a row a no-op, never a regression.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config import Topology, faults
from tidemark.config.throttle import Throttle
from tidemark.features.materialize import FeatureWriter
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
        """Write the rows these partitions buffered up to the commit just made, once the
        previous write is done."""
        chains = [chain for part in parts for chain in part.features.take()]
        await self.settle()
        if chains:
            self._task = asyncio.create_task(self._write(chains))

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

    async def settle(self) -> None:
        """Wait for every write started so far; a failed one raises here."""
        task, self._task = self._task, None
        if task is not None:
            await task

    async def written(self) -> None:
        """Wait for the write in flight, leaving its outcome to `settle` too."""
        if self._task is not None:
            await asyncio.shield(self._task)

    def abandon(self) -> None:
        """The owner is going down on an error: the writes are idempotent, let them go."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
