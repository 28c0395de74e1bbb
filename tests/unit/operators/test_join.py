"""The `join` step against the in-memory state and an in-memory table partition: rows by
time, tombstones, left and inner, co-partitioning, and results that do not depend on batch
cutting or on a crash between state checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.operator_runs import Run, crash_and_replay, reassigned, summary
from tidemark.config import ConfigError, parse_topology
from tidemark.config.join import Join as JoinSpec
from tidemark.config.state import State
from tidemark.operators import Event, InMemoryState, Pipeline, build_pipeline
from tidemark.operators.events import StepError
from tidemark.operators.join import Join, TableRecord
from tidemark.operators.pipeline import OnError


class ListFeed:
    """A table partition whose records are all there to read."""

    def __init__(self, records: Sequence[TableRecord]) -> None:
        self.records = list(records)

    async def head(self, position: int) -> TableRecord | None:
        return next((r for r in self.records if r.offset >= position), None)


class Joined:
    """A join over one table partition, driven like any batched operator."""

    stateful = True
    batched = True

    def __init__(self, table: Sequence[TableRecord], **spec: Any) -> None:
        fields = {"table": "customers", "on": "customer", **spec}
        self.join = Join(JoinSpec.model_validate(fields), keyed_by_on=True)
        self.id = self.join.id
        self.feed = ListFeed(table)

    async def run(self, events: list[Event], state: State, on_error: OnError) -> list[Event]:
        return await self.join.join(events, state, self.feed, on_error)


def rows(*records: tuple[str, dict[str, Any] | None, int]) -> list[TableRecord]:
    """Table records `(key, row or None for a tombstone, timestamp)` at offsets 0, 1, ..."""
    return [TableRecord(i, key, row, ts) for i, (key, row, ts) in enumerate(records)]


def orders(*records: tuple[str, int]) -> list[Event]:
    """Stream records `(customer, time)` at offsets 0, 1, ..."""
    return [
        Event(customer, {"order": i, "customer": customer}, i, t)
        for i, (customer, t) in enumerate(records)
    ]


def tiers(out: list[Event]) -> list[tuple[int, Any]]:
    return [(e.value["order"], e.value.get("tier")) for e in out]


async def test_a_record_gets_the_row_as_of_its_own_time() -> None:
    table = rows(
        ("c1", {"name": "Ada", "tier": "gold"}, 100),
        ("c1", {"name": "Ada", "tier": "platinum"}, 300),
    )
    run = Run(Joined(table, fields=["tier"]))
    out = await run.feed(orders(("c1", 50), ("c1", 100), ("c1", 299), ("c1", 300)))
    assert tiers(out) == [(0, None), (1, "gold"), (2, "gold"), (3, "platinum")]
    assert out[1].value == {"order": 1, "customer": "c1", "tier": "gold"}  # only `fields`
    assert run.state.clocks["table"] == 2  # the next table record to apply


async def test_without_fields_the_whole_row_is_added() -> None:
    run = Run(Joined(rows(("c1", {"name": "Ada", "tier": "gold"}, 0))))
    out = await run.feed(orders(("c1", 5)))
    assert out[0].value == {"order": 0, "customer": "c1", "name": "Ada", "tier": "gold"}


async def test_a_tombstone_deletes_the_row() -> None:
    table = rows(("c1", {"tier": "gold"}, 0), ("c1", None, 10))
    run = Run(Joined(table, fields=["tier"]))
    out = await run.feed(orders(("c1", 5), ("c1", 10)))
    assert tiers(out) == [(0, "gold"), (1, None)]
    assert run.live() == {}


async def test_inner_drops_records_without_a_row_and_left_keeps_them() -> None:
    table = rows(("c1", {"tier": "gold"}, 0))
    stream = orders(("c1", 5), ("c2", 5), ("c1", 6))
    inner = Run(Joined(table, fields=["tier"], how="inner"))
    assert tiers(await inner.feed(stream)) == [(0, "gold"), (2, "gold")]
    left = Run(Joined(table, fields=["tier"]))
    assert tiers(await left.feed(stream)) == [(0, "gold"), (1, None), (2, "gold")]


async def test_a_record_not_keyed_by_its_join_key_is_a_record_error() -> None:
    run = Run(Joined(rows()))
    stream = [Event("o-1", {"order": 0, "customer": "c1"}, 0, 5)]
    assert await run.feed(stream) == []
    assert run.errors == [(0, "not_copartitioned")]


async def test_a_record_without_the_join_field_is_a_record_error() -> None:
    run = Run(Joined(rows()))
    assert await run.feed([Event("c1", {"order": 0}, 0, 5)]) == []
    assert run.errors == [(0, "missing_field")]


async def test_table_records_that_are_not_rows_are_skipped_and_counted() -> None:
    table = [
        TableRecord(0, "c1", None, 0, "not a JSON object: list"),
        TableRecord(1, None, {"tier": "x"}, 0),
        TableRecord(2, "c1", {"tier": "gold"}, 0),
    ]
    joined = Joined(table, fields=["tier"])
    assert tiers(await Run(joined).feed(orders(("c1", 5)))) == [(0, "gold")]
    assert joined.join.table_errors == 2


def test_a_join_names_a_declared_table_and_the_stream_key() -> None:
    base = {
        "name": "t",
        "kafka": {"bootstrap_servers": "k:9092"},
        "mongo": {"uri": "mongodb://m"},
        "source": {"topic": "orders"},
        "tables": {"customers": {"topic": "customers"}},
    }
    step = {"join": {"table": "customers", "on": "customer_id"}}

    def pipeline(**changes: Any) -> Pipeline:
        return build_pipeline(parse_topology(yaml.safe_dump({**base, **changes}), env={}))

    assert pipeline(pipeline=[step]).tables == ["customers"]
    with pytest.raises(StepError) as missing:
        pipeline(pipeline=[{"join": {"table": "people", "on": "c"}}])
    assert missing.value.path == "pipeline[0].join.table"
    with pytest.raises(StepError) as other_key:
        pipeline(source={"topic": "orders", "key": "order_id"}, pipeline=[step])
    assert other_key.value.path == "pipeline[0].join.on"
    with pytest.raises(ConfigError) as how:
        pipeline(pipeline=[{"join": {**step["join"], "how": "outer"}}])
    assert str(how.value.errors[0]).startswith("pipeline[0].join.how:")


# Property tests: any cutting of the stream, and a crash between state checkpoints, give
# exactly the outputs of one uncut run, which are those of a merge of the two inputs by time.

KEYS = ["c1", "c2", "c3"]


@st.composite
def inputs(draw: st.DrawFn) -> tuple[list[TableRecord], list[Event]]:
    n_table = draw(st.integers(0, 25))
    table = [
        TableRecord(
            i,
            draw(st.sampled_from(KEYS)),
            draw(st.one_of(st.none(), st.builds(lambda v: {"v": v}, st.integers(0, 9)))),
            draw(st.integers(0, 60)),
        )
        for i in range(n_table)
    ]
    stream = [
        Event(k, {"order": i, "customer": k}, i, draw(st.integers(0, 60)))
        for i, k in enumerate(draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=30)))
    ]
    return table, stream


def merged(table: list[TableRecord], stream: list[Event]) -> list[tuple[int, Any]]:
    """Kafka Streams' merge of a task's two inputs: the smaller head timestamp goes first,
    the table on a tie."""
    rows_now: dict[str, Any] = {}
    out, t = [], 0
    for event in stream:
        while t < len(table) and table[t].timestamp <= event.timestamp:
            record = table[t]
            rows_now[record.key] = record.row  # type: ignore[index]
            t += 1
        row = rows_now.get(event.key)  # type: ignore[arg-type]
        out.append((event.value["order"], row["v"] if row else None))
    return out


@settings(max_examples=150, deadline=None)
@given(inputs(), st.lists(st.integers(1, 7), min_size=1, max_size=10))
async def test_results_do_not_depend_on_batch_cutting(
    data: tuple[list[TableRecord], list[Event]], cuts: list[int]
) -> None:
    table, stream = data
    run = Run(Joined(table, fields=["v"]), InMemoryState())
    await run.feed_cut(stream, cuts)
    assert [(e.value["order"], e.value["v"]) for e in run.outputs] == merged(table, stream)


@settings(max_examples=150, deadline=None)
@given(
    inputs(),
    st.lists(st.integers(1, 6), min_size=1, max_size=6),
    st.integers(0, 8),
    st.integers(0, 8),
    st.integers(0, 2**16),
)
async def test_a_crash_between_checkpoints_replays_to_the_same_outputs(
    data: tuple[list[TableRecord], list[Event]], cuts: list[int], w: int, c: int, seed: int
) -> None:
    table, stream = data
    expected, replayed = await crash_and_replay(
        lambda: Joined(table, fields=["v"]), stream, cuts, w, c, seed
    )
    assert summary(replayed) == summary(expected)


@settings(max_examples=150, deadline=None)
@given(
    inputs(),
    st.lists(st.integers(1, 7), min_size=1, max_size=10),
    st.sets(st.integers(1, 12), max_size=4),
)
async def test_results_do_not_depend_on_partition_reassignments(
    data: tuple[list[TableRecord], list[Event]], cuts: list[int], moves: set[int]
) -> None:
    table, stream = data
    moved = await reassigned(lambda: Joined(table, fields=["v"]), stream, cuts, moves)
    assert [(e.value["order"], e.value["v"]) for e in moved.outputs] == merged(table, stream)
