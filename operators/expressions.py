"""Safe expressions over a record's fields (`amount > 0 and country == "NL"`).

Parsed once by simpleeval, which walks a whitelisted subset of Python's AST: no attribute
access, no imports, no calls but the functions listed here. No `eval`. Everything an
expression may do is checked when the topology loads; what a record makes of it at run time
is bounded (no result beyond 64-bit integers or a few thousand digits on the way there),
so a hostile record costs microseconds and a dead letter, never a stuck or crashed worker.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from typing import Any

from simpleeval import (
    DEFAULT_OPERATORS,
    FeatureNotAvailable,
    InvalidExpression,
    MultipleExpressions,
    NameNotDefined,
    SimpleEval,
)

from tidemark.operators.events import INT64, RecordError, StepError

# Deterministic functions only: outputs must be a function of input order and state.
FUNCTIONS = {
    "abs": abs,
    "float": float,
    "int": int,
    "len": len,
    "lower": str.lower,
    "max": max,
    "min": min,
    "round": round,
    "str": str,
    "upper": str.upper,
}


MAX_BITS = 4096  # intermediate integers: enough for any real computation, cheap to compute


class ExpressionError(StepError):
    """An expression that does not parse or uses something not allowed."""


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise RecordError(f"an intermediate result exceeds {MAX_BITS} bits", "expression")
    return value


def _power(a: Any, b: Any) -> Any:
    # simpleeval bounds each operand, not the result: 3999999 ** 3999999 would run for hours.
    big = isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1
    if big and b * abs(a).bit_length() > MAX_BITS:
        raise RecordError(f"{a} ** {b} exceeds {MAX_BITS} bits", "expression")
    return _bounded(operator.pow(a, b))


def _times(a: Any, b: Any) -> Any:
    return _bounded(DEFAULT_OPERATORS[ast.Mult](a, b))


def _shift(a: Any, b: Any) -> Any:
    return _bounded(DEFAULT_OPERATORS[ast.LShift](a, b))


OPERATORS = {**DEFAULT_OPERATORS, ast.Pow: _power, ast.Mult: _times, ast.LShift: _shift}


class Expression:
    """A parsed expression, evaluated against one JSON object at a time."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._evaluator = SimpleEval(operators=OPERATORS, functions=FUNCTIONS, names={})
        try:
            with warnings.catch_warnings():
                # simpleeval only warns, then evaluates the first: `a > 0; b` would load.
                warnings.simplefilter("error", MultipleExpressions)
                self._tree = self._evaluator.parse(source)
        except MultipleExpressions as exc:
            raise ExpressionError(f"invalid expression {source!r}: one expression only") from exc
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {source!r}: {exc.msg}") from exc
        except InvalidExpression as exc:
            raise ExpressionError(f"invalid expression {source!r}: {exc}") from exc
        except (RecursionError, MemoryError, ValueError) as exc:
            raise ExpressionError(f"expression too deeply nested: {source[:80]!r}...") from exc
        if not isinstance(self._tree, ast.Expr):  # simpleeval parses statements too
            kind = type(self._tree).__name__
            raise ExpressionError(f"{source!r}: an expression is needed, not a {kind} statement")
        self._check(source)

    def _check(self, source: str) -> None:
        """Refuse at load what simpleeval would refuse at the first record."""
        for node in ast.walk(self._tree):
            kind = type(node)
            if isinstance(node, ast.expr) and kind not in self._evaluator.nodes:
                raise ExpressionError(f"{source!r}: {kind.__name__} is not allowed")
            if isinstance(node, ast.BinOp | ast.UnaryOp | ast.BoolOp | ast.Compare):
                ops = node.ops if isinstance(node, ast.Compare) else [node.op]
                for op in ops:
                    if not isinstance(op, ast.And | ast.Or) and type(op) not in OPERATORS:
                        raise ExpressionError(f"{source!r}: {type(op).__name__} is not allowed")
            if isinstance(node, ast.Call) and not (
                isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
            ):
                allowed = ", ".join(sorted(FUNCTIONS))
                raise ExpressionError(f"{source!r}: only these functions may be called: {allowed}")
            if isinstance(node, ast.Attribute):
                raise ExpressionError(f"{source!r}: attribute access is not allowed")
        calls = {id(n.func) for n in ast.walk(self._tree) if isinstance(n, ast.Call)}
        if not any(isinstance(n, ast.Name) and id(n) not in calls for n in ast.walk(self._tree)):
            try:  # a constant: it fails for every record or for none
                self({})
            except RecordError as exc:
                raise ExpressionError(str(exc)) from exc

    def __call__(self, fields: Any) -> Any:
        if not isinstance(fields, dict):
            raise RecordError("expressions need a JSON object value", "expression")
        self._evaluator.names = fields
        try:
            result = self._evaluator.eval(self.source, previously_parsed=self._tree)
        except NameNotDefined as exc:
            raise RecordError(
                f"field {exc.name!r} is missing (in {self.source!r})", "missing_field"
            ) from exc
        except FeatureNotAvailable as exc:  # refused at load; kept as a last line
            raise ExpressionError(f"{self.source!r}: {exc}") from exc
        except (InvalidExpression, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            # What the record's values made of the expression: too long, too big, wrong type.
            raise RecordError(f"{self.source!r} failed: {exc}", "expression") from exc
        except RecursionError as exc:
            raise RecordError(f"{self.source!r} failed: nested too deeply", "expression") from exc
        return _result(self.source, result)


def _result(source: str, value: Any) -> Any:
    """Results are JSON a sink and MongoDB can hold: 64-bit integers, finite floats."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise RecordError(f"{source!r} gives an integer beyond 64 bits", "expression")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"{source!r} gives {value}", "expression")
    return value
