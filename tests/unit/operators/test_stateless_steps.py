"""rename, flat_map and route: outputs, dead-letter reasons, placement checks."""

from __future__ import annotations

from typing import Any

import pytest

from tidemark.config import ConfigError, parse_topology
from tidemark.operators import Event, InMemoryState, Pipeline, build_pipeline
from tidemark.operators.events import StepError

HEAD = """
name: t
kafka: {bootstrap_servers: k}
mongo: {uri: m}
source: {topic: in, key: user}
"""


def pipeline(steps: str, tail: str = "") -> Pipeline:
    return build_pipeline(parse_topology(f"{HEAD}pipeline:\n{steps}\n{tail}"))


async def run(
    p: Pipeline, events: list[Event], states: dict[str, Any] | None = None
) -> tuple[list[Event], list[tuple[int, str]]]:
    errors: list[tuple[int, str]] = []
    out = await p.process(
        events, states or {}, lambda e, exc: errors.append((e.offset, exc.reason))
    )
    return out, errors


# -- rename ---------------------------------------------------------------------------


async def test_rename_moves_fields_at_once_and_leaves_missing_ones() -> None:
    p = pipeline("  - rename: {a: b, b: a, user_id: user, gone: here}")
    out, errors = await run(
        p,
        [
            Event("k", {"a": 1, "b": 2, "user_id": "u", "x": 3}, 0, 7),
            Event("k", {"x": 3}, 1),
            Event("k", [1, 2], 2),
        ],
    )
    assert [(o.value, o.offset, o.timestamp) for o in out] == [
        ({"b": 1, "a": 2, "user": "u", "x": 3}, 0, 7),  # swapped, in the original order
        ({"x": 3}, 1, 0),
    ]
    assert errors == [(2, "not_an_object")]


async def test_rename_replaces_a_field_of_the_new_name() -> None:
    out, _ = await run(pipeline("  - rename: {new: old}"), [Event("k", {"old": 1, "new": 2}, 0)])
    assert out[0].value == {"old": 2}


def test_two_fields_renamed_to_one_name_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        pipeline("  - rename: {a: c, b: c}")
    assert [str(e) for e in caught.value.errors] == [
        "pipeline[0].rename: two fields are renamed to 'c'"
    ]


# -- flat_map ---------------------------------------------------------------------------

ORDER = {"order": 7, "user": "u", "items": [{"sku": "a"}, {"sku": "b"}, 3]}


async def test_flat_map_replaces_the_array_by_each_element() -> None:
    out, errors = await run(pipeline("  - flat_map: items"), [Event("u", ORDER, 5, 99)])
    assert [o.value for o in out] == [
        {"order": 7, "user": "u", "items": {"sku": "a"}},
        {"order": 7, "user": "u", "items": {"sku": "b"}},
        {"order": 7, "user": "u", "items": 3},
    ]
    assert {(o.key, o.offset, o.timestamp) for o in out} == {("u", 5, 99)}
    assert errors == []


async def test_flat_map_as_puts_the_element_under_its_own_field() -> None:
    nested = {"order": {"id": 7, "lines": [1, 2]}, "user": "u"}
    out, _ = await run(
        pipeline("  - flat_map: {field: order.lines, as: line}"), [Event("u", nested, 0)]
    )
    assert [o.value for o in out] == [
        {"order": {"id": 7}, "user": "u", "line": 1},
        {"order": {"id": 7}, "user": "u", "line": 2},
    ]
    assert nested == {"order": {"id": 7, "lines": [1, 2]}, "user": "u"}, "input unchanged"


async def test_flat_map_nested_path_copies_only_the_path() -> None:
    value = {"o": {"lines": [1, 2], "meta": {"m": 1}}}
    out, _ = await run(pipeline("  - flat_map: o.lines"), [Event("u", value, 0)])
    assert [o.value["o"]["lines"] for o in out] == [1, 2]
    assert out[0].value["o"] is not out[1].value["o"]
    assert value["o"]["lines"] == [1, 2]


async def test_flat_map_errors_and_empty_arrays() -> None:
    out, errors = await run(
        pipeline("  - flat_map: items"),
        [
            Event("u", {"items": []}, 0),
            Event("u", {"other": 1}, 1),
            Event("u", {"items": {"a": 1}}, 2),
            Event("u", "text", 3),
            Event("u", {"items": [1]}, 4),
        ],
    )
    assert [(o.offset, o.value) for o in out] == [(4, {"items": 1})]
    assert errors == [(1, "missing_field"), (2, "wrong_type"), (3, "not_an_object")]


AGGREGATE = "  - aggregate: {id: n, key: user, compute: {n: count, q: {sum: items.q}}}"


async def test_every_element_counts_in_a_stateful_step_and_recovery_skips_them_all() -> None:
    p = pipeline(f"  - flat_map: items\n{AGGREGATE}")
    state = InMemoryState()
    batch = [
        Event("u", {"user": "u", "items": [{"q": 1}, {"q": 2}, {"q": 3}]}, 10),
        Event("u", {"user": "u", "items": [{"q": 4}]}, 11),
    ]
    out, _ = await run(p, batch, {"n": state})
    assert [(o.offset, o.value) for o in out] == [
        (10, {"n": 1, "q": 1}),
        (10, {"n": 2, "q": 3}),
        (10, {"n": 3, "q": 6}),
        (11, {"n": 4, "q": 10}),
    ]
    assert state.data["u"].value == {"n": 4, "q": 10} and state.data["u"].offset == 11
    # After a crash the same records come again: already applied, all skipped.
    again, _ = await run(p, batch, {"n": state})
    assert again == [] and state.data["u"].value == {"n": 4, "q": 10}


async def test_a_key_stamped_at_the_record_before_a_crash_skips_all_its_siblings() -> None:
    p = pipeline(f"  - flat_map: items\n{AGGREGATE}")
    state = InMemoryState()
    state.put("u", {"n": 2, "q": 3}, 10)  # record 10 was flushed before the crash
    out, _ = await run(
        p, [Event("u", {"user": "u", "items": [{"q": 1}, {"q": 2}]}, 10)], {"n": state}
    )
    assert out == [] and state.data["u"].value == {"n": 2, "q": 3}


# -- route ---------------------------------------------------------------------------

ROUTE = """  - route:
      - {when: "amount >= 100", to: big}
      - {when: "country == 'NL'", to: dutch}"""


async def test_route_takes_the_first_branch_that_holds() -> None:
    p = pipeline(ROUTE + "\n      - {otherwise: rest}")
    out, errors = await run(
        p,
        [
            Event("a", {"amount": 500, "country": "NL"}, 0),
            Event("b", {"amount": 5, "country": "NL"}, 1),
            Event("c", {"amount": 5, "country": "DE"}, 2),
            Event("d", {"country": "DE"}, 3),
        ],
    )
    assert [(o.key, o.topic) for o in out] == [("a", "big"), ("b", "dutch"), ("c", "rest")]
    assert errors == [(3, "missing_field")]


async def test_without_otherwise_an_unmatched_record_keeps_the_sink() -> None:
    out, _ = await run(pipeline(ROUTE), [Event("c", {"amount": 5, "country": "DE"}, 0)])
    assert [(o.key, o.topic) for o in out] == [("c", None)]  # the sink, or dropped without one


def test_route_must_be_the_last_step() -> None:
    with pytest.raises(StepError) as caught:
        pipeline(ROUTE + '\n  - filter: "amount > 0"')
    assert caught.value.path == "pipeline[0].route"
    assert "route must be the last step" in str(caught.value)


def test_otherwise_and_a_sink_are_refused_together() -> None:
    with pytest.raises(StepError) as caught:
        pipeline(ROUTE + "\n      - {otherwise: rest}", "sink: {topic: out}")
    assert caught.value.path == "pipeline[0].route[2].otherwise"
    assert "the sink 'out' would receive nothing" in str(caught.value)


@pytest.mark.parametrize(
    ("branches", "message"),
    [
        ("[{otherwise: a}, {when: x, to: b}]", "`otherwise` may appear once, as the last branch"),
        ("[{otherwise: a}]", "a route needs at least one `when` branch"),
        ("[{when: x}]", "a branch needs `when` (an expression) and `to` (a topic)"),
        ("[{when: x, to: a, otherwise: b}]", "a branch is either {when, to} or {otherwise}"),
    ],
)
def test_route_shapes_are_checked_with_their_path(branches: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        pipeline(f"  - route: {branches}")
    assert any(
        message in str(e) and str(e).startswith("pipeline[0].route") for e in caught.value.errors
    )


def test_route_expressions_are_checked_at_build() -> None:
    with pytest.raises(StepError) as caught:
        pipeline('  - route: [{when: "amount.__class__", to: a}]')
    assert caught.value.path == "pipeline[0].route"
