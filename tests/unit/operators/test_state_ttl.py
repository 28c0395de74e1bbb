"""`ttl` on keyed steps against the in-memory state: keys expire by stream time, their
documents go with their timers, results do not depend on batch cutting, and a replay after a
crash never brings an expired value back."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.operator_runs import Run, crash_and_replay, summary
from tidemark.config.aggregation import Aggregate
from tidemark.config.model import PythonCall
from tidemark.operators import Event, InMemoryState
from tidemark.operators.aggregate import KeyedAggregate
from tidemark.operators.custom import PythonStateful
from tidemark.operators.expiry import Expiring
from tidemark.operators.registry import _aggregate

SPEC = {"id": "agg", "key": "k", "compute": {"n": "count", "total": {"sum": "x"}}}


def keyed(ttl: str = "10s", **extra: Any) -> Expiring:
    spec = Aggregate.model_validate({**SPEC, "ttl": ttl, **extra})
    operator = _aggregate(spec)
    assert isinstance(operator, Expiring)
    return operator


def events(*records: tuple[str, int], start: int = 0, x: int = 1) -> list[Event]:
    return [
        Event(key, {"k": key, "t": t, "x": x}, offset, t)
        for offset, (key, t) in enumerate(records, start)
    ]


def counts(out: list[Event]) -> list[tuple[str | None, int]]:
    return [(e.key, e.value["n"]) for e in out]


def test_without_ttl_the_aggregate_stays_per_event_and_ttl_needs_no_window() -> None:
    assert isinstance(_aggregate(Aggregate.model_validate(SPEC)), KeyedAggregate)
    window = {"type": "tumbling", "size": "1m"}
    with pytest.raises(ValidationError, match="ttl is for aggregates without a window"):
        Aggregate.model_validate({**SPEC, "ttl": "7d", "window": window})
    with pytest.raises(ValidationError, match="`ttl` is for stateful python steps"):
        PythonCall.model_validate({"callable": "tests.custom_steps:enrich", "ttl": "1h"})
    with pytest.raises(ValidationError):
        Aggregate.model_validate({**SPEC, "ttl": "0s"})


async def test_a_key_expires_once_stream_time_reaches_its_latest_time_plus_ttl() -> None:
    run = Run(keyed())
    assert counts(await run.feed(events(("u", 1_000), ("u", 4_000)))) == [("u", 1), ("u", 2)]
    assert run.live() == {
        "k|u": {"v": {"n": 2, "total": 2}, "ts": 4_000},
        "t|000000000014000|u": 4_000,  # the timer moved with the update
    }
    await run.feed(events(("v", 14_000), start=2))
    assert run.state.get("k|u") == (None, 2)  # removed as of the record that expired it
    assert "t|000000000014000|u" not in run.live()
    assert counts(await run.feed(events(("u", 5_000), start=3))) == [("u", 1)]


async def test_an_expired_key_reads_as_absent_before_its_timer_runs() -> None:
    run = Run(keyed())
    out = await run.feed(events(("u", 1_000), ("v", 11_000), ("u", 11_000), ("u", 12_000)))
    assert counts(out) == [("u", 1), ("v", 1), ("u", 1), ("u", 2)]
    assert run.live()["k|u"] == {"v": {"n": 2, "total": 2}, "ts": 12_000}
    assert sorted(k for k in run.live() if k.startswith("t|")) == [
        "t|000000000021000|v",
        "t|000000000022000|u",
    ]


async def test_an_out_of_order_record_does_not_shorten_a_keys_life() -> None:
    run = Run(keyed())
    await run.feed(events(("u", 9_000), ("u", 2_000)))
    assert run.live()["k|u"]["ts"] == 9_000
    assert counts(await run.feed(events(("u", 18_999), start=2))) == [("u", 3)]


async def test_a_record_already_past_its_ttl_is_applied_and_forgotten_at_once() -> None:
    run = Run(keyed())
    out = await run.feed(events(("v", 30_000), ("u", 5_000), ("u", 6_000)))
    assert counts(out) == [("v", 1), ("u", 1), ("u", 1)]
    assert run.state.get("k|u") == (None, 2)
    assert run.live() == {
        "k|v": {"v": {"n": 1, "total": 1}, "ts": 30_000},
        "t|000000000040000|v": 30_000,
    }


async def test_the_time_field_and_bad_records() -> None:
    run = Run(keyed(time="when"))
    batch = [
        Event(None, {"k": "u", "x": 1, "when": "1970-01-01T00:00:01Z"}, 0, 0),
        Event(None, {"k": "u", "x": 1}, 1, 0),
        Event(None, {"k": "u", "x": "one", "when": 2_000}, 2, 0),
        Event(None, {"x": 1, "when": 2_000}, 3, 0),
    ]
    out = await run.feed(batch)
    assert counts(out) == [("u", 1)]
    assert sorted(run.errors) == [(1, "missing_field"), (2, "wrong_type"), (3, "missing_field")]
    assert run.state.stream_time == 2_000  # a record whose key and time read moves it


async def test_a_record_stamped_before_a_crash_is_skipped_even_when_expired() -> None:
    state = InMemoryState()
    state.put("k|u", {"v": {"n": 4, "total": 4}, "ts": 1_000}, 7)
    state.stream_time = 50_000
    run = Run(keyed(), state)
    assert await run.feed(events(("u", 1_000), start=7)) == []
    assert counts(await run.feed(events(("u", 1_000), start=8))) == [("u", 1)]


async def test_a_stateful_python_step_with_ttl() -> None:
    spec = PythonCall.model_validate(
        {
            "callable": "tests.custom_steps:running_total",
            "stateful": True,
            "key": "user",
            "id": "tot",
            "ttl": "10s",
        }
    )
    run = Run(Expiring(PythonStateful(spec), spec.ttl or 0))

    def rec(offset: int, t: int, amount: int) -> Event:
        return Event(None, {"user": "u", "amount": amount}, offset, t)

    out = await run.feed([rec(0, 1_000, 2), rec(1, 5_000, 3), rec(2, 14_999, 4)])
    assert [e.value["total"] for e in out] == [2, 5, 9]
    out = await run.feed([rec(3, 25_000, 1), rec(4, 26_000, -1), rec(5, 26_500, 6)])
    assert [e.value["total"] for e in out] == [1, 6]  # expired at 25s, deleted at offset 4
    assert run.live() == {"k|u": {"v": {"total": 6}, "ts": 26_500}, "t|000000000036500|u": 26_500}


def records() -> st.SearchStrategy[list[tuple[str, int]]]:
    return st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 40_000)), min_size=1, max_size=40
    )


@settings(max_examples=150, deadline=None)
@given(records(), st.lists(st.integers(1, 7), min_size=1, max_size=10))
async def test_results_do_not_depend_on_batch_sizes(
    recs: list[tuple[str, int]], cuts: list[int]
) -> None:
    one, batched = Run(keyed()), Run(keyed())
    await one.feed_cut(events(*recs), [1])
    await batched.feed_cut(events(*recs), cuts)
    assert summary(batched.outputs) == summary(one.outputs)
    assert batched.live() == one.live()


@settings(max_examples=150, deadline=None)
@given(
    records(),
    st.lists(st.integers(1, 7), min_size=1, max_size=5),
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(0, 2**16),
)
async def test_a_replay_after_a_crash_never_resurrects_an_expired_value(
    recs: list[tuple[str, int]], cuts: list[int], w: int, c: int, seed: int
) -> None:
    expected, replayed = await crash_and_replay(keyed, events(*recs), cuts, w, c, seed)
    assert summary(replayed) == summary(expected)
