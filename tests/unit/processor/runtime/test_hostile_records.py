"""Hypothesis-generated hostile records through every example topology: nothing but a
`RecordError` ever comes out, and the good records around them give exactly their outputs."""

from __future__ import annotations

import random
from pathlib import Path

import bson
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import EXAMPLES, good_records, hostile_records, interleave, run_in_memory


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=hostile_records, seed=st.integers(0, 2**32))
def test_hostile_records_are_rejected_with_a_reason_and_good_ones_stay_exact(
    example: Path, bad: list[tuple[bytes | None, bytes]], seed: int
) -> None:
    good = good_records(example, "good-5f1c", 30)
    expected, none_rejected, _ = run_in_memory(example, good)
    assert not none_rejected
    rng = random.Random(seed)
    mixed = interleave(good, bad, lambda: rng.randrange(1 << 30))

    outputs, rejected, final = run_in_memory(
        example, mixed
    )  # raises if anything but RecordError escapes

    assert all(reason.strip() for reason in rejected.values())
    mine = [(o.key, o.value) for o in outputs if str(o.key).lower().startswith("good-5f1c")]
    assert mine == [(o.key, o.value) for o in expected]
    for out in outputs:  # what the sink and MongoDB are given can be written
        orjson.dumps(out.value)
    for values in final.values():
        bson.encode({"v": list(values.values())})
