"""Safe expressions over a record's fields (`amount > 0 and country == "NL"`).

Parsed once by simpleeval, which walks a whitelisted subset of Python's AST: no attribute
access to dunders, no imports, no calls but the functions listed here. No `eval`.
"""

from __future__ import annotations

import ast
from typing import Any

from simpleeval import FeatureNotAvailable, InvalidExpression, NameNotDefined, SimpleEval

from tidemark.config.errors import TidemarkError
from tidemark.operators.events import RecordError

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


class ExpressionError(TidemarkError):
    """An expression that does not parse or uses something not allowed."""


class Expression:
    """A parsed expression, evaluated against one JSON object at a time."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._evaluator = SimpleEval(functions=FUNCTIONS, names={})
        try:
            self._tree = self._evaluator.parse(source)
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {source!r}: {exc.msg}") from exc
        for node in ast.walk(self._tree):
            if isinstance(node, ast.Call) and not (
                isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
            ):
                allowed = ", ".join(sorted(FUNCTIONS))
                raise ExpressionError(f"{source!r}: only these functions may be called: {allowed}")
            if isinstance(node, ast.Attribute):
                raise ExpressionError(f"{source!r}: attribute access is not allowed")

    def __call__(self, fields: Any) -> Any:
        if not isinstance(fields, dict):
            raise RecordError("expressions need a JSON object value")
        self._evaluator.names = fields
        try:
            return self._evaluator.eval(self.source, previously_parsed=self._tree)
        except NameNotDefined as exc:
            raise RecordError(f"field {exc.name!r} is missing (in {self.source!r})") from exc
        except (FeatureNotAvailable, InvalidExpression) as exc:
            raise ExpressionError(f"{self.source!r}: {exc}") from exc
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise RecordError(f"{self.source!r} failed: {exc}") from exc
