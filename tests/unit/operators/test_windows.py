"""Windowed aggregates against the in-memory state: Kafka Streams' rules, case by case, and
results that do not depend on how the records were cut into batches."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.operator_runs import reassigned
from tidemark.config.aggregation import Aggregate
from tidemark.operators import Event, InMemoryState, RecordError
from tidemark.operators.session import SessionAggregate
from tidemark.operators.sliding import SlidingAggregate
from tidemark.operators.window import TimeWindowAggregate, windows_for

Op = TimeWindowAggregate | SessionAggregate | SlidingAggregate


def op(window: dict[str, Any], emit: str = "on_close", **extra: Any) -> Op:
    spec = Aggregate.model_validate(
        {
            "id": "w",
            "key": "k",
            "time": "t",
            "window": window,
            "emit": emit,
            "compute": {"n": "count", "total": {"sum": "x"}},
            **extra,
        }
    )
    kinds = {"session": SessionAggregate, "sliding": SlidingAggregate}
    return kinds.get(window["type"], TimeWindowAggregate)(spec)


class Run:
    """Feeds records (key, time) with increasing offsets; collects outputs and errors."""

    def __init__(self, operator: Op) -> None:
        self.op, self.state, self.offset = operator, InMemoryState(), 0
        self.outputs: list[Event] = []
        self.errors: list[tuple[int, str]] = []

    async def feed(self, *records: tuple[str, int]) -> list[Event]:
        events = []
        for key, t in records:
            events.append(Event(key, {"k": key, "t": t, "x": 1}, self.offset, 0))
            self.offset += 1

        def on_error(event: Event, exc: RecordError) -> None:
            self.errors.append((event.offset, exc.reason))

        out = await self.op.run(events, self.state, on_error)
        self.outputs += out
        return out


def summary(events: list[Event]) -> list[tuple[str, int, int, int, int]]:
    """(key, window start, window end, count, offset) of each output."""
    return [
        (e.key or "", e.value["window_start"], e.value["window_end"], e.value["n"], e.offset)
        for e in events
    ]


def test_windows_for_aligns_to_epoch_like_kafka_streams() -> None:
    assert windows_for(7_000, 10_000, 10_000) == [0]
    assert windows_for(10_000, 10_000, 10_000) == [10_000]
    assert windows_for(7_000, 10_000, 5_000) == [0, 5_000]
    assert windows_for(3_000, 10_000, 5_000) == [0]  # no negative starts


async def test_tumbling_emits_each_window_once_when_stream_time_passes_its_end() -> None:
    run = Run(op({"type": "tumbling", "size": "10s"}))
    assert await run.feed(("a", 1_000), ("a", 5_000), ("a", 9_999)) == []
    out = await run.feed(("b", 10_000))  # stream time reaches the end: [0, 10s) closes
    assert summary(out) == [("a", 0, 10_000, 3, 3)]
    assert out[0].value["window_start_iso"] == "1970-01-01T00:00:00.000Z"
    assert out[0].timestamp == 9_999  # the window's largest event time, as Kafka Streams
    assert await run.feed(("b", 12_000)) == []


async def test_a_record_past_end_plus_grace_is_late_and_dead_lettered() -> None:
    run = Run(op({"type": "tumbling", "size": "10s"}))
    await run.feed(("a", 1_000), ("b", 10_000), ("a", 9_000))
    assert run.errors == [(2, "late")]
    assert summary(run.outputs) == [("a", 0, 10_000, 1, 1)]  # the late record did not count


async def test_grace_keeps_a_window_open_for_out_of_order_records() -> None:
    run = Run(op({"type": "tumbling", "size": "10s", "grace": "5s"}))
    await run.feed(("a", 1_000), ("b", 10_000), ("a", 9_000), ("b", 14_999))
    assert run.outputs == [] and run.errors == []
    out = await run.feed(("b", 15_000))  # end 10s + grace 5s
    assert summary(out) == [("a", 0, 10_000, 2, 4)]


async def test_late_records_can_be_dropped_and_counted_instead() -> None:
    run = Run(op({"type": "tumbling", "size": "10s"}, on_late="drop"))
    await run.feed(("a", 1_000), ("b", 10_000), ("a", 9_000))
    assert run.errors == [] and run.op.late_dropped == 1


async def test_hopping_counts_a_record_in_every_window_and_decides_lateness_per_window() -> None:
    run = Run(op({"type": "hopping", "size": "10s", "step": "5s"}))
    await run.feed(("a", 7_000))  # in [0, 10s) and [5s, 15s)
    out = await run.feed(("b", 10_000))
    assert summary(out) == [("a", 0, 10_000, 1, 1)]
    # 9s is late for [0, 10s) (closed) but on time for [5s, 15s).
    await run.feed(("a", 9_000))
    assert run.errors == []
    out = await run.feed(("b", 15_000))
    assert ("a", 5_000, 15_000, 2, 3) in summary(out)


async def test_on_update_emits_every_change_and_nothing_at_close() -> None:
    run = Run(op({"type": "tumbling", "size": "10s"}, emit="on_update"))
    out = await run.feed(("a", 1_000), ("a", 2_000))
    assert [e.value["n"] for e in out] == [1, 2]
    assert await run.feed(("b", 10_000)) == [run.outputs[-1]]  # b's own update only
    assert run.outputs[-1].key == "b"
    assert await run.state.scan("w|", "w}") == [
        ("w|000000000010000|b", run.state.data["w|000000000010000|b"])
    ], "a's window was removed when it closed"


async def test_one_record_closing_a_window_and_jumping_far_ahead_loses_nothing() -> None:
    """Kafka Streams' onWindowClose loses a result here; suppress, and Tidemark, do not."""
    run = Run(op({"type": "tumbling", "size": "1s", "grace": "5s"}))
    await run.feed(("a", 100), ("b", 1_500), ("c", 2_500))
    out = await run.feed(("d", 1_000_000))
    assert summary(out) == [
        ("a", 0, 1_000, 1, 3),
        ("b", 1_000, 2_000, 1, 3),
        ("c", 2_000, 3_000, 1, 3),
    ]


async def test_sessions_merge_exactly_gap_apart_and_split_at_gap_plus_one() -> None:
    run = Run(op({"type": "session", "gap": "10s"}))
    await run.feed(("a", 0), ("a", 10_000), ("a", 20_001))
    await run.feed(("z", 100_000))
    assert summary(run.outputs)[:2] == [("a", 0, 10_000, 2, 2), ("a", 20_001, 20_001, 1, 3)]


async def test_a_record_between_two_sessions_merges_them() -> None:
    run = Run(op({"type": "session", "gap": "10s", "grace": "10s"}))
    await run.feed(("a", 0), ("a", 15_000), ("a", 8_000))
    out = await run.feed(("z", 100_000))
    assert summary(out)[0] == ("a", 0, 15_000, 3, 3)


async def test_a_closed_session_never_merges_again() -> None:
    run = Run(op({"type": "session", "gap": "10s", "grace": "5s"}))
    await run.feed(("a", 0), ("z", 25_000))  # a's session [0, 0] closes at 0 + 10 + 5
    assert summary(run.outputs) == [("a", 0, 0, 1, 1)]
    # Within the gap of the closed session, not late: a session of its own, due at once.
    out = await run.feed(("a", 10_000))
    assert summary(out) == [("a", 10_000, 10_000, 1, 2)]
    assert run.errors == []


async def test_sliding_windows_are_the_distinct_sets_of_records_within_size() -> None:
    run = Run(op({"type": "sliding", "size": "5s"}))
    await run.feed(("a", 10_000), ("a", 12_000), ("a", 20_000))
    # Each record's left window ends at stream time, so with no grace it is final at once;
    # a@10's right window [10.001s, 15.001s] holds a@12 and closes when a@20 arrives.
    assert sorted(summary(run.outputs)) == [
        ("a", 5_000, 10_000, 1, 0),
        ("a", 7_000, 12_000, 2, 1),
        ("a", 10_001, 15_001, 1, 2),
        ("a", 15_000, 20_000, 1, 2),
    ]


async def test_a_session_record_is_late_only_past_gap_and_grace() -> None:
    run = Run(op({"type": "session", "gap": "10s", "grace": "5s"}))
    await run.feed(("z", 30_000), ("a", 15_000), ("a", 14_999))
    assert run.errors == [(2, "late")]  # 14999 < 30000 - 10000 - 5000


def records() -> st.SearchStrategy[list[tuple[str, int]]]:
    return st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 60_000)), min_size=1, max_size=40
    )


def windows() -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from(
        [
            {"type": "tumbling", "size": "10s"},
            {"type": "tumbling", "size": "10s", "grace": "3s"},
            {"type": "hopping", "size": "10s", "step": "4s", "grace": "2s"},
            {"type": "session", "gap": "5s"},
            {"type": "session", "gap": "5s", "grace": "4s"},
            {"type": "sliding", "size": "5s"},
            {"type": "sliding", "size": "5s", "grace": "2s"},
        ]
    )


@settings(max_examples=150, deadline=None)
@given(records(), windows(), st.lists(st.integers(1, 7), min_size=1, max_size=10))
async def test_results_do_not_depend_on_batch_sizes(
    recs: list[tuple[str, int]], window: dict[str, Any], cuts: list[int]
) -> None:
    one = Run(op(window))
    for record in recs:
        await one.feed(record)
    batched, i, n = Run(op(window)), 0, 0
    while i < len(recs):
        size = cuts[n % len(cuts)]
        await batched.feed(*recs[i : i + size])
        i, n = i + size, n + 1
    assert sorted(summary(batched.outputs)) == sorted(summary(one.outputs))
    assert batched.errors == one.errors


def as_events(recs: list[tuple[str, int]]) -> list[Event]:
    return [Event(k, {"k": k, "t": t, "x": 1}, i, 0) for i, (k, t) in enumerate(recs)]


@settings(max_examples=150, deadline=None)
@given(
    records(),
    windows(),
    st.lists(st.integers(1, 7), min_size=1, max_size=10),
    st.sets(st.integers(1, 12), max_size=4),
)
async def test_results_do_not_depend_on_partition_reassignments(
    recs: list[tuple[str, int]], window: dict[str, Any], cuts: list[int], moves: set[int]
) -> None:
    one = Run(op(window))
    await one.feed(*recs)
    moved = await reassigned(lambda: op(window), as_events(recs), cuts, moves)
    # Windows closed within one batch may come out in another order than when cut
    # differently: the same results, compared as in the batch-size property above.
    assert sorted(summary(moved.outputs)) == sorted(summary(one.outputs))
    assert moved.errors == one.errors
