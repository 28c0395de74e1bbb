"""The commit protocol's feature step without I/O: rows of the committed partitions go to
the writer in one write at a time, and a freshness breach is one warning per minute."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tidemark.config import load_topology
from tidemark.config.features import FeatureGroup
from tidemark.features.materialize import FeatureBuffer, Written
from tidemark.features.validation import Row
from tidemark.processor.protocol.features import FeatureStep

EXAMPLE = Path(__file__).resolve().parents[4] / "config/examples/user-features.yaml"


@dataclass
class Writer:
    """Records what it is given; every row `lag_ms` old when written. With `held`, each
    write waits for it."""

    group: FeatureGroup
    lag_ms: int
    written: list[list[list[Row]]] = field(default_factory=list)
    busy: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event | None = None

    async def write(self, chains: list[list[Row]]) -> Written:
        assert not self.busy, "two writes in flight"
        self.busy = True
        self.started.set()
        if self.held is not None:
            await self.held.wait()
        self.busy = False
        self.written.append(chains)
        return Written(len(chains), 0, [self.lag_ms] * len(chains))


@dataclass
class Part:
    features: FeatureBuffer


def step(lag_ms: int) -> tuple[FeatureStep, Writer]:
    topology = load_topology(EXAMPLE, env={})
    assert topology.feature_group is not None
    writer = Writer(topology.feature_group, lag_ms)
    return FeatureStep(topology, writer), writer  # type: ignore[arg-type]


def parts(*entities: str, offset: int = 1) -> list[Any]:
    found = []
    for entity in entities:
        buffer = FeatureBuffer()
        buffer.add(Row(entity, {}, 1, 0, offset))
        found.append(Part(buffer))
    return found


def rows(writer: Writer) -> list[list[tuple[str, int]]]:
    return [[(c[-1].entity, c[-1].offset) for c in w] for w in writer.written]


async def test_rows_handed_over_during_a_write_are_merged_into_the_next_one() -> None:
    feature_step, writer = step(lag_ms=10)
    writer.held = asyncio.Event()
    await feature_step.start(parts("a", "b"))
    await writer.started.wait()  # the first write is in flight: the commit goes on
    await feature_step.start(parts("c"))
    await feature_step.start(parts("a", offset=5))
    writer.held.set()
    await feature_step.written()  # everything handed over so far
    assert rows(writer) == [[("a", 1), ("b", 1)], [("c", 1), ("a", 5)]]
    await feature_step.start(parts())  # nothing buffered: no write
    await feature_step.written()
    assert len(writer.written) == 2


async def test_a_failed_write_is_raised_to_the_next_commit() -> None:
    feature_step, writer = step(lag_ms=10)

    async def broken(chains: list[list[Row]]) -> Written:
        raise RuntimeError("MongoDB said no")

    writer.write = broken  # type: ignore[method-assign]
    await feature_step.start(parts("a"))
    with pytest.raises(RuntimeError, match="said no"):
        await feature_step.written()


async def test_a_freshness_breach_is_one_warning_per_minute() -> None:
    feature_step, _ = step(lag_ms=9_000)  # the example's SLA is 5 s
    with capture_logs() as logs:
        for _ in range(3):
            await feature_step.start(parts("a"))
        await feature_step.written()
    breaches = [e for e in logs if e["event"] == "feature_freshness_sla_breached"]
    assert len(breaches) == 1
    assert breaches[0]["lag_s"] == 9.0 and breaches[0]["sla_s"] == 5.0


async def test_rows_within_the_sla_log_nothing() -> None:
    feature_step, _ = step(lag_ms=100)
    with capture_logs() as logs:
        await feature_step.start(parts("a"))
        await feature_step.written()
    assert not [e for e in logs if e["event"] == "feature_freshness_sla_breached"]
