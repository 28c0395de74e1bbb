"""The `dedupe` step against the in-memory state: the rules case by case, decisions that do
not depend on batch cutting, and replays after a crash that pass and drop the same records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.operator_runs import Run, crash_and_replay, reassigned, summary
from tidemark.config import ConfigError, parse_topology
from tidemark.config.dedupe import Dedupe as DedupeSpec
from tidemark.operators import Event, InMemoryState, Pipeline, RecordError, build_pipeline
from tidemark.operators.dedupe import Dedupe
from tidemark.operators.stateless import FlatMap

IOT = Path(__file__).resolve().parents[3] / "config/examples/iot-device-stats.yaml"


def dedupe(within: str = "10s", **extra: Any) -> Dedupe:
    return Dedupe(DedupeSpec.model_validate({"id": "seen", "key": "id", "within": within, **extra}))


def events(*records: tuple[str, int], start: int = 0) -> list[Event]:
    return [
        Event(ident, {"id": ident, "t": t}, offset, t)
        for offset, (ident, t) in enumerate(records, start)
    ]


def passed(out: list[Event]) -> list[int]:
    return [e.offset for e in out]


async def test_the_first_record_of_an_id_passes_and_resends_within_the_span_are_dropped() -> None:
    run = Run(dedupe())
    out = await run.feed(events(("a", 1_000), ("b", 2_000), ("a", 5_000), ("a", 10_999)))
    assert passed(out) == [0, 1]
    assert out[0] == Event("a", {"id": "a", "t": 1_000}, 0, 1_000)  # the record, unchanged
    assert run.op.duplicates_dropped == 2  # type: ignore[attr-defined]


async def test_a_resend_at_first_plus_within_passes_and_starts_a_new_entry() -> None:
    run = Run(dedupe())
    out = await run.feed(events(("a", 1_000), ("a", 11_000), ("a", 20_999), ("a", 21_000)))
    assert passed(out) == [0, 1, 3]


async def test_the_entry_expires_by_stream_time_and_its_timer_removes_it() -> None:
    run = Run(dedupe())
    await run.feed(events(("a", 1_000)))
    assert run.state.get("d|a") == (1_000, 0)
    assert "t|000000000011000|a" in run.live()
    await run.feed(events(("b", 11_000), start=1))  # stream time reaches 1s + 10s
    assert run.state.get("d|a") == (None, 1)  # deleted as of the record that expired it
    assert run.live() == {"d|b": 11_000, "t|000000000021000|b": 11_000}
    # Late resends of a, within 10 s of its first time but after expiry: they pass; one
    # still young enough starts an entry, one whose own span is over keeps none.
    out = await run.feed(events(("a", 500), ("c", 900), ("c", 800), ("a", 2_000), start=2))
    assert passed(out) == [2, 3, 4, 5]
    assert run.live()["d|a"] == 2_000 and "d|c" not in run.live()


async def test_an_expired_entry_counts_as_expired_before_its_timer_runs() -> None:
    """In one batch: b expires a's entry, and a's resend right after it passes, exactly as
    it would with a batch boundary between them."""
    run = Run(dedupe())
    out = await run.feed(events(("a", 1_000), ("b", 11_000), ("a", 9_000), ("a", 11_500)))
    assert passed(out) == [0, 1, 2]
    assert run.live() == {
        "d|b": 11_000,
        "t|000000000021000|b": 11_000,
        "d|a": 9_000,
        "t|000000000019000|a": 9_000,
    }


async def test_a_record_older_than_the_first_is_a_duplicate_while_the_entry_lives() -> None:
    run = Run(dedupe())
    out = await run.feed(events(("a", 5_000), ("a", 1_000), ("a", 14_999)))
    assert passed(out) == [0]


async def test_time_field_and_bad_records() -> None:
    run = Run(dedupe(time="when"))
    batch = [
        Event("x", {"id": "a", "when": "1970-01-01T00:00:01Z"}, 0, 0),
        Event("x", {"id": "a", "when": 5_000}, 1, 0),
        Event("x", {"when": 5_000}, 2, 0),
        Event("x", {"id": "a"}, 3, 0),
        Event("x", {"id": True, "when": 1}, 4, 0),
    ]
    out = await run.feed(batch)
    assert passed(out) == [0]
    assert run.errors == [(2, "missing_field"), (3, "missing_field"), (4, "bad_key")]


async def test_a_record_stamped_before_a_crash_is_skipped() -> None:
    state = InMemoryState()
    state.put("d|a", 1_000, 5)  # written by offset 5 before the crash
    run = Run(dedupe(), state)
    out = await run.feed(events(("a", 1_000), start=5))
    assert passed(out) == [] and run.op.duplicates_dropped == 0  # type: ignore[attr-defined]


async def test_a_replay_skips_the_resends_an_expiry_was_stamped_past() -> None:
    """W after a's first record, and the flush that crashed had removed a's entry as of b:
    replaying the resend at 5 s must not start an entry that would swallow the one at 12 s."""
    recs = events(("a", 0), ("a", 5_000), ("b", 10_000), ("a", 12_000))
    for seed in range(20):
        expected, replayed = await crash_and_replay(dedupe, recs, [1], 1, 3, seed)
        assert summary(replayed) == summary(expected) == summary(recs[3:]), seed


async def test_siblings_of_one_record_are_deduplicated_among_themselves() -> None:
    pipeline = Pipeline([FlatMap("ids", "id"), dedupe()])
    errors: list[RecordError] = []
    out = await pipeline.process(
        [Event("k", {"ids": ["a", "b", "a"], "t": 1}, 0, 1)],
        {"seen": InMemoryState()},
        lambda _, exc: errors.append(exc),
    )
    assert [e.value["id"] for e in out] == ["a", "b"] and not errors
    assert pipeline.take_duplicates_dropped() == 1
    assert pipeline.take_duplicates_dropped() == 0


def test_the_step_validates() -> None:
    assert DedupeSpec.model_validate({"id": "s", "key": "p.id", "within": "1h"}).within == 3_600_000
    for bad in ({"within": "0s"}, {"within": "soon"}, {"key": "."}, {"time": ""}, {"x": 1}):
        with pytest.raises(ValidationError):
            DedupeSpec.model_validate({"id": "s", "key": "id", "within": "1h", **bad})


def test_the_iot_example_validates_and_errors_name_the_step() -> None:
    text = IOT.read_text()
    topology = parse_topology(text, env={})
    assert isinstance(build_pipeline(topology).operators[0], Dedupe)
    broken = text.replace("within: 10m", "within: 0s").replace(
        "emit: on_close", "ttl: 7d\n      emit: on_close"
    )
    with pytest.raises(ConfigError) as caught:
        parse_topology(broken, env={})
    assert [str(e) for e in caught.value.errors] == [
        "pipeline[0].dedupe.within: duration must be positive and at most 366d, got '0s'",
        "pipeline[1].aggregate: ttl is for aggregates without a window: a window's state is"
        " removed when it closes (after its grace)",
    ]


def records() -> st.SearchStrategy[list[tuple[str, int]]]:
    return st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 40_000)), min_size=1, max_size=40
    )


@settings(max_examples=150, deadline=None)
@given(records(), st.lists(st.integers(1, 7), min_size=1, max_size=10))
async def test_decisions_do_not_depend_on_batch_sizes(
    recs: list[tuple[str, int]], cuts: list[int]
) -> None:
    one, batched = Run(dedupe()), Run(dedupe())
    await one.feed_cut(events(*recs), [1])
    await batched.feed_cut(events(*recs), cuts)
    assert summary(batched.outputs) == summary(one.outputs)
    assert batched.live() == one.live()
    assert batched.op.duplicates_dropped == one.op.duplicates_dropped  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None)
@given(
    records(),
    st.lists(st.integers(1, 7), min_size=1, max_size=5),
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(0, 2**16),
)
async def test_a_replay_after_a_crash_passes_and_drops_what_the_first_run_did(
    recs: list[tuple[str, int]], cuts: list[int], w: int, c: int, seed: int
) -> None:
    expected, replayed = await crash_and_replay(dedupe, events(*recs), cuts, w, c, seed)
    assert summary(replayed) == summary(expected)


@settings(max_examples=150, deadline=None)
@given(
    records(),
    st.lists(st.integers(1, 7), min_size=1, max_size=10),
    st.sets(st.integers(1, 12), max_size=4),
)
async def test_decisions_do_not_depend_on_partition_reassignments(
    recs: list[tuple[str, int]], cuts: list[int], moves: set[int]
) -> None:
    one = Run(dedupe())
    await one.feed(events(*recs))
    moved = await reassigned(dedupe, events(*recs), cuts, moves)
    assert summary(moved.outputs) == summary(one.outputs)
