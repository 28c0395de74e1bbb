"""Hypothesis-generated hostile records through every example topology: nothing but a
`RecordError` ever comes out, and the good records around them give exactly their outputs."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import bson
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import EXAMPLES, good_records, hostile_records, interleave
from tidemark.config import load_topology
from tidemark.operators import Event, RecordError, build_pipeline
from tidemark.operators.memory import InMemoryState
from tidemark.processor.runtime.decoding import Decoder

BATCH = 16


def run(
    example: Path, records: list[tuple[bytes | None, bytes]]
) -> tuple[list[Event], dict[int, str], dict[str, Any]]:
    """Outputs, rejections (offset: reason) and final state of the records, in batches."""
    topology = load_topology(example, env={})
    pipeline = build_pipeline(topology)
    states = {op: InMemoryState() for op in pipeline.stateful_ids}
    decoder = Decoder(topology.source)
    outputs: list[Event] = []
    rejected: dict[int, str] = {}

    def reject(event: Event, exc: RecordError) -> None:
        rejected[event.offset] = str(exc)

    for start in range(0, len(records), BATCH):
        events = []
        for offset, (key, value) in enumerate(records[start : start + BATCH], start):
            try:
                events.append(decoder.decode(key, value, offset, 0))
            except RecordError as exc:
                rejected[offset] = str(exc)
        outputs += asyncio.run(pipeline.process(events, states, reject))
    final = {op: {k: s.value for k, s in st.data.items()} for op, st in states.items()}
    return outputs, rejected, final


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=hostile_records, seed=st.integers(0, 2**32))
def test_hostile_records_are_rejected_with_a_reason_and_good_ones_stay_exact(
    example: Path, bad: list[tuple[bytes | None, bytes]], seed: int
) -> None:
    good = good_records(example, "good-5f1c", 30)
    expected, none_rejected, _ = run(example, good)
    assert not none_rejected
    rng = random.Random(seed)
    mixed = interleave(good, bad, lambda: rng.randrange(1 << 30))

    outputs, rejected, final = run(example, mixed)  # raises if anything but RecordError escapes

    assert all(reason.strip() for reason in rejected.values())
    mine = [(o.key, o.value) for o in outputs if str(o.key).lower().startswith("good-5f1c")]
    assert mine == [(o.key, o.value) for o in expected]
    for out in outputs:  # what the sink and MongoDB are given can be written
        orjson.dumps(out.value)
    for values in final.values():
        bson.encode({"v": list(values.values())})
