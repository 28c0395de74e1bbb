"""Hostile expressions: refused at load, or bounded at run time; none reads a file, imports
a module or runs a command."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile import hostile_expressions
from tidemark.operators import RecordError
from tidemark.operators.expressions import Expression, ExpressionError

WATCHED = ("open", "import", "exec", "os.", "subprocess.", "socket.", "shutil.", "ctypes.")
seen: list[str] = []
armed = False


def _audit(event: str, args: Any) -> None:
    if armed and event.startswith(WATCHED):
        seen.append(event)


sys.addaudithook(_audit)  # cannot be removed; it only records while armed
records = st.fixed_dictionaries(
    {"amount": st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5))}
)


@settings(max_examples=400, deadline=None)
@given(source=hostile_expressions, record=records)
def test_an_expression_is_refused_or_runs_bounded_and_touches_nothing(
    source: str, record: dict[str, Any]
) -> None:
    global armed
    seen.clear()
    armed = True
    try:
        try:
            expression = Expression(source)
        except ExpressionError:
            return
        started = time.perf_counter()
        with contextlib.suppress(RecordError):
            expression(record)
        elapsed = time.perf_counter() - started
    finally:
        armed = False
    assert not seen, f"{source!r} caused {seen}"
    assert elapsed < 1.0, f"{source!r} ran {elapsed:.1f}s"  # a safety bound, not a benchmark


def test_several_expressions_are_refused_not_cut_to_the_first() -> None:
    with pytest.raises(ExpressionError, match="one expression only"):
        Expression("amount > 0; amount")


@pytest.mark.parametrize("source", ["A:0", "a = 1", "import os", "pass", "del a"])
def test_statements_are_refused_at_load(source: str) -> None:
    with pytest.raises(ExpressionError, match="not a"):
        Expression(source)
