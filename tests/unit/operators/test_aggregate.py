"""Keyed aggregate over an in-memory State: values, outputs, and the recovery skip rule."""

from __future__ import annotations

import pytest

from tidemark.config.model import Aggregate, Topology
from tidemark.operators import Event, InMemoryState, RecordError, Stamped, build_pipeline
from tidemark.operators.aggregate import KeyedAggregate


def aggregate(**compute: object) -> KeyedAggregate:
    return KeyedAggregate(
        Aggregate.model_validate({"id": "agg", "key": "user", "compute": compute})
    )


def run(op: KeyedAggregate, event: Event, state: InMemoryState) -> Event | None:
    return op.apply(event, op.key_of(event), state)


def test_count_sum_min_max_avg_first_last() -> None:
    op = aggregate(
        n="count",
        total={"sum": "x"},
        lo={"min": "x"},
        hi={"max": "x"},
        mean={"avg": "x"},
        first={"first": "x"},
        last={"last": "x"},
    )
    state = InMemoryState()
    outputs = [
        run(op, Event(None, {"user": "u", "x": x}, i), state) for i, x in enumerate([4, 1, 7])
    ]
    assert outputs[-1] is not None
    assert outputs[-1].key == "u"
    assert outputs[-1].value == {
        "n": 3,
        "total": 12,
        "lo": 1,
        "hi": 7,
        "mean": 4.0,
        "first": 4,
        "last": 7,
    }
    assert state.get("u") == Stamped(
        {"n": 3, "total": 12, "lo": 1, "hi": 7, "mean": [12, 3], "first": 4, "last": 7}, 2
    )


def test_outputs_are_snapshots_not_shared_accumulators() -> None:
    op, state = aggregate(n="count"), InMemoryState()
    first = run(op, Event(None, {"user": "u"}, 0), state)
    run(op, Event(None, {"user": "u"}, 1), state)
    assert first is not None and first.value == {"n": 1}


def test_event_at_or_below_stamped_offset_is_skipped() -> None:
    op, state = aggregate(n="count"), InMemoryState()
    state.put("u", {"n": 5}, 10)
    assert run(op, Event(None, {"user": "u"}, 10), state) is None
    assert run(op, Event(None, {"user": "u"}, 9), state) is None
    out = run(op, Event(None, {"user": "u"}, 11), state)
    assert out is not None and out.value == {"n": 6}


def test_integer_keys_become_strings() -> None:
    op, state = aggregate(n="count"), InMemoryState()
    out = run(op, Event(None, {"user": 42}, 0), state)
    assert out is not None and out.key == "42"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": 1}, "field 'user' is missing"),
        ({"user": "", "x": 1}, "must be a non-empty string or an integer"),
        ({"user": "u", "x": "abc"}, "must be a number"),
        ({"user": "u", "x": True}, "must be a number"),
        ({"user": "u"}, "field 'x' is missing"),
    ],
)
def test_bad_records_raise_record_error_and_change_nothing(
    value: dict[str, object], message: str
) -> None:
    op, state = aggregate(total={"sum": "x"}), InMemoryState()
    with pytest.raises(RecordError, match=message):
        run(op, Event(None, value, 0), state)
    assert state.data == {}


def test_the_group_key_is_the_decoded_key_only_where_nothing_changed_the_record() -> None:
    topology = {
        "name": "t",
        "kafka": {"bootstrap_servers": "k:9092"},
        "mongo": {"uri": "mongodb://m"},
        "source": {"topic": "in", "key": "user"},
    }
    step = {"aggregate": {"id": "agg", "key": "user", "compute": {"n": "count"}}}
    rewrite = {"map": {"user": "'someone else'"}}
    # As the decoder leaves it: the event's key is the source key field's value.
    event = Event("u1", {"user": "someone else"}, 0)

    first = build_pipeline(Topology.model_validate({**topology, "pipeline": [step]}))
    after_map = build_pipeline(Topology.model_validate({**topology, "pipeline": [rewrite, step]}))

    assert first.operators[0].key_of(event) == "u1"  # type: ignore[union-attr]
    assert after_map.operators[1].key_of(event) == "someone else"  # type: ignore[union-attr]
