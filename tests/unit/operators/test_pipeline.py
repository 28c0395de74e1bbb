"""Stateless operators, expressions, and batch runs through a whole pipeline."""

from __future__ import annotations

import pytest

from tidemark.config import parse_topology
from tidemark.config.state import NotPrefetched
from tidemark.operators import Event, InMemoryState, Stamped, build_pipeline
from tidemark.operators.expressions import Expression, ExpressionError

TOPOLOGY = """
name: t
kafka: {bootstrap_servers: k}
mongo: {uri: m}
source: {topic: in, key: user}
pipeline:
  - filter: "amount > 0"
  - map: {cents: "int(amount * 100)"}
  - project: [user, cents]
  - aggregate: {id: per_user, key: user, compute: {n: count, cents: {sum: cents}}}
"""


async def test_batch_flows_through_every_stage_and_errors_are_reported() -> None:
    pipeline = build_pipeline(parse_topology(TOPOLOGY))
    state = InMemoryState()
    events = [
        Event("a", {"user": "a", "amount": 1.5}, 0),
        Event("a", {"user": "a", "amount": -1}, 1),
        Event("b", {"user": "b", "amount": "x"}, 2),
        Event("a", {"user": "a", "amount": 2}, 3),
    ]
    errors: list[tuple[int, str]] = []
    outputs = await pipeline.process(
        events, {"per_user": state}, lambda e, exc: errors.append((e.offset, type(exc).__name__))
    )
    assert [(o.key, o.value, o.offset) for o in outputs] == [
        ("a", {"n": 1, "cents": 150}, 0),
        ("a", {"n": 2, "cents": 350}, 3),
    ]
    assert errors == [(2, "RecordError")]
    assert pipeline.stateful_ids == ["per_user"]


def test_expression_evaluates_fields() -> None:
    expr = Expression('amount > 0 and lower(country) == "nl"')
    assert expr({"amount": 3, "country": "NL"}) is True
    assert expr({"amount": 3, "country": "DE"}) is False


@pytest.mark.parametrize(
    "source",
    ['__import__("os").system("true")', "amount.__class__", "open('/etc/passwd')", "amount >"],
)
def test_unsafe_or_broken_expressions_are_rejected_at_build(source: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(source)


class _Unprefetched(InMemoryState):
    """A store that, like the MongoDB one, refuses a read of a key it did not prefetch."""

    def get(self, key: str) -> Stamped | None:
        raise NotPrefetched(f"{key} was read before it was prefetched")


async def test_a_bug_stops_the_pipeline_instead_of_dead_lettering_the_record() -> None:
    pipeline = build_pipeline(parse_topology(TOPOLOGY))
    errors: list[Event] = []
    with pytest.raises(NotPrefetched):
        await pipeline.process(
            [Event("a", {"user": "a", "amount": 1}, 0)],
            {"per_user": _Unprefetched()},
            lambda e, exc: errors.append(e),
        )
    assert errors == [], "a bug in our code is not the record's fault"
