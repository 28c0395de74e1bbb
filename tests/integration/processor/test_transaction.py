"""The transactional producer against the real broker: outputs whose event time the sink
would refuse are stamped with the clock instead of failing every retry of the transaction."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.pipelines import read_topic, started_transaction
from tests.support import Services, Topics
from tidemark.operators.events import MAX_TIME

pytestmark = pytest.mark.integration


async def test_an_event_time_the_sink_refuses_becomes_the_clock_and_others_are_kept(
    services: Services, make_topic: Topics, tmp_path: Path
) -> None:
    source, sink = make_topic("clicks", 1), make_topic("out", 1)
    async with started_transaction(services, tmp_path, source, sink) as (_, tx):
        now = time.time_ns() // 1_000_000
        earlier = now - 5_000
        # 9999-12-31 is past Kafka 4's `message.timestamp.after.max.ms` (an hour ahead).
        tx.produce(sink, b"single", b"1", partition=0, timestamp=MAX_TIME)
        tx.produce_all(sink, [(b"batch", b"2", MAX_TIME), (b"kept", b"3", earlier)], 0)
        assert await tx.commit(), "the transaction was refused"
    records = await asyncio.to_thread(read_topic, services, sink, 1, 3)
    stamps = {m.key(): m.timestamp()[1] for m in records}
    assert abs(stamps[b"single"] - now) < 60_000, stamps
    assert abs(stamps[b"batch"] - now) < 60_000, stamps
    assert stamps[b"kept"] == earlier, "an accepted event time is kept"


async def test_a_sink_with_log_append_time_takes_any_event_time(
    services: Services, make_topic: Topics, tmp_path: Path
) -> None:
    """Such a topic has no limits (the broker stamps each record), which `_accepted` gives
    as bounds past 64 bits: the produce loop in C must take them."""
    source = make_topic("clicks", 1)
    sink = make_topic("out", 1, {"message.timestamp.type": "LogAppendTime"})
    async with started_transaction(services, tmp_path, source, sink) as (_, tx):
        tx.produce_all(sink, [(b"far", b"1", MAX_TIME), (b"early", b"2", 1)], 0)
        assert await tx.commit(), "the transaction was refused"
    records = await asyncio.to_thread(read_topic, services, sink, 1, 2)
    assert sorted(m.key() for m in records) == [b"early", b"far"]
