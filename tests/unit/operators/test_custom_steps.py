"""The `python` step: stateless and stateful calls, the recovery rule, dead-letter reasons
for what user code does with a record, and load-time errors for what it is."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tidemark.config import parse_topology
from tidemark.operators import Event, InMemoryState, Pipeline, build_pipeline
from tidemark.operators.custom import json_size, load_callable
from tidemark.operators.events import RecordError, StepError

HEAD = """
name: t
kafka: {bootstrap_servers: k}
mongo: {uri: m}
source: {topic: in, key: user}
pipeline:
"""
TOTAL = (
    '  - python: {callable: "tests.custom_steps:running_total", stateful: true, key: user, id: tot}'
)


def pipeline(steps: str) -> Pipeline:
    return build_pipeline(parse_topology(HEAD + steps))


async def run(
    p: Pipeline, events: list[Event], states: dict[str, Any] | None = None
) -> tuple[list[Event], list[tuple[int, str, str]]]:
    errors: list[tuple[int, str, str]] = []
    out = await p.process(
        events, states or {}, lambda e, exc: errors.append((e.offset, exc.reason, str(exc)))
    )
    return out, errors


async def test_stateless_function_replaces_the_value() -> None:
    out, errors = await run(
        pipeline("  - python: tests.custom_steps:enrich"),
        [Event("u", {"user": "u", "amount": 1.25}, 3, 42), Event("u", {"user": "u"}, 4)],
    )
    assert [(o.key, o.value, o.offset, o.timestamp) for o in out] == [
        ("u", {"user": "u", "amount": 1.25, "cents": 125}, 3, 42)
    ]
    assert errors == [(4, "python_error", "tests.custom_steps:enrich raised KeyError: 'amount'")]


async def test_a_list_gives_several_outputs_and_none_drops() -> None:
    out, _ = await run(
        pipeline("  - python: {callable: tests.custom_steps:explode}"),
        [Event("u", {"user": "u", "n": 2}, 0), Event("v", {"user": "v", "n": 0}, 1)],
    )
    assert [(o.key, o.value, o.offset) for o in out] == [
        ("u", {"user": "u", "i": 0}, 0),
        ("u", {"user": "u", "i": 1}, 0),
    ]


async def test_a_result_that_is_not_json_is_the_records_fault() -> None:
    out, errors = await run(
        pipeline("  - python: tests.custom_steps:bad_result"),
        [Event("u", {"set": True}, 0), Event("u", {"ok": 1}, 1)],
    )
    assert [o.value for o in out] == [{"ok": 1}]
    assert errors == [
        (0, "python_result", "tests.custom_steps:bad_result returned a set, which is not JSON")
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": 2**70}, "an integer beyond 64 bits"),
        ({"a": float("nan")}, "nan, which JSON cannot hold"),
        ({1: "a"}, "an object key that is not a string"),
        ({"a": (1, 2)}, "a tuple, which is not JSON"),
    ],
)
def test_json_check(value: Any, problem: str) -> None:
    with pytest.raises(RecordError, match=problem):
        json_size(value, "m:f")


def test_a_value_that_contains_itself_is_refused_not_looped_over() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(RecordError, match="nested deeper than"):
        json_size(loop, "m:f")


async def test_stateful_function_keeps_state_per_key_with_offsets() -> None:
    p = pipeline(TOTAL)
    assert p.stateful_ids == ["tot"]
    state = InMemoryState()
    out, errors = await run(
        p,
        [
            Event(None, {"user": "a", "amount": 2}, 0),
            Event(None, {"user": "b", "amount": 5}, 1),
            Event(None, {"user": "a", "amount": 3}, 2),
            Event(None, {"user": "a", "amount": -1}, 3),  # resets: state deleted, no output
            Event(None, {"user": "a", "amount": 4}, 4),
            Event(None, {"amount": 4}, 5),
        ],
        {"tot": state},
    )
    assert [(o.key, o.value, o.offset) for o in out] == [
        ("a", {"user": "a", "total": 2}, 0),
        ("b", {"user": "b", "total": 5}, 1),
        ("a", {"user": "a", "total": 5}, 2),
        ("a", {"user": "a", "total": 4}, 4),
    ]
    assert errors == [(5, "missing_field", "field 'user' is missing")]
    assert (state.data["a"].value, state.data["a"].offset) == ({"total": 4}, 4)
    assert (state.data["b"].value, state.data["b"].offset) == ({"total": 5}, 1)


async def test_stateful_recovery_rule_skips_what_was_applied() -> None:
    p = pipeline(TOTAL)
    state = InMemoryState()
    state.put("a", {"total": 10}, 7)  # applied up to offset 7 before a crash
    out, _ = await run(
        p,
        [Event(None, {"user": "a", "amount": 1}, offset) for offset in (6, 7, 8)],
        {"tot": state},
    )
    assert [(o.value, o.offset) for o in out] == [({"user": "a", "total": 11}, 8)]
    assert state.data["a"] == ({"total": 11}, 8)


async def test_a_failing_stateful_call_leaves_the_state_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = module(
        tmp_path,
        monkeypatch,
        "def step(value, state):\n"
        "    state['total'] += 1  # changes its copy, then fails\n"
        "    raise ValueError('no')\n"
        "def pair(value, state):\n"
        "    return [1]\n",
    )
    state = InMemoryState()
    state.put("a", {"total": 1}, 0)
    spec = f'{{callable: "{name}:step", stateful: true, key: user, id: s}}'
    out, errors = await run(
        pipeline(f"  - python: {spec}"), [Event(None, {"user": "a"}, 1)], {"s": state}
    )
    assert out == [] and errors == [(1, "python_error", f"{name}:step raised ValueError: no")]
    assert state.data["a"] == ({"total": 1}, 0)
    spec = f'{{callable: "{name}:pair", stateful: true, key: user, id: s}}'
    _, errors = await run(
        pipeline(f"  - python: {spec}"), [Event(None, {"user": "a"}, 1)], {"s": state}
    )
    assert errors == [(1, "python_result", f"{name}:pair returned list, not (new_state, output)")]


async def test_python_after_flat_map_applies_every_element_to_the_state() -> None:
    steps = f"  - flat_map: items\n{TOTAL}"
    state = InMemoryState()
    out, _ = await run(
        pipeline(steps),
        [Event(None, {"user": "a", "items": [1, 2], "amount": 2}, 0)],
        {"tot": state},
    )
    assert [o.value["total"] for o in out] == [2, 4]  # both siblings applied
    assert state.data["a"] == ({"total": 4}, 0)


async def test_changing_the_given_value_in_place_touches_no_sibling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = module(
        tmp_path, monkeypatch, "def f(v):\n    v['meta']['seen'] = v['items']\n    return v\n"
    )
    record = {"meta": {}, "items": [1, 2]}
    out, _ = await run(
        pipeline(f"  - flat_map: items\n  - python: {name}:f"), [Event(None, record, 0)]
    )
    assert [o.value["meta"] for o in out] == [{"seen": 1}, {"seen": 2}]
    assert record == {"meta": {}, "items": [1, 2]}


def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """A module of `source` importable under a fresh name; its name."""
    name = f"custom_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("", "nosuch_pkg.mod:fn", "cannot import 'nosuch_pkg.mod': No module named 'nosuch_pkg'"),
        ("x = 1 / 0\n", "{m}:fn", "importing '{m}' failed: ZeroDivisionError: division by zero"),
        ("def f(v): ...\n", "{m}:g", "module '{m}' has no attribute 'g'"),
        ("f = 3\n", "{m}:f", "'{m}:f' is not callable"),
        ("def f(): ...\n", "{m}:f", "must be called as fn(value), but its signature is ()"),
        ("def f(a, b): ...\n", "{m}:f", "must be called as fn(value), but its signature is (a, b)"),
        ("def f(a, *, k): ...\n", "{m}:f", "but its signature is (a, *, k)"),
        ("async def f(a): ...\n", "{m}:f", "must be a plain function, fn(value), not async"),
    ],
)
def test_what_is_wrong_with_a_callable_is_said_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, target: str, message: str
) -> None:
    name = module(tmp_path, monkeypatch, source)
    with pytest.raises(StepError) as caught:
        load_callable(target.format(m=name), 1, "fn(value)")
    assert message.format(m=name) in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "def f(value, state=None, extra=1): ...\n",
        "def f(*args): ...\n",
        "class C:\n    def m(self, value, state): ...\nf = C().m\n",
    ],
)
def test_signatures_that_can_be_called_with_two_arguments_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    name = module(tmp_path, monkeypatch, source)
    assert callable(load_callable(f"{name}:f", 2, "fn(value, state)"))


def test_the_error_names_the_step() -> None:
    with pytest.raises(StepError) as caught:
        pipeline('  - filter: "a > 0"\n  - python: nosuch_pkg.mod:fn')
    assert caught.value.path == "pipeline[1].python"


def test_stateful_ids_must_be_unique_across_steps() -> None:
    with pytest.raises(StepError) as caught:
        pipeline(f"{TOTAL}\n  - aggregate: {{id: tot, key: user, compute: {{n: count}}}}")
    assert caught.value.path == "pipeline[1].aggregate.id"
