"""The aggregations of an `aggregate` step: fold a record in, merge two (sessions), read out.

An accumulator is a JSON-able dict, one entry per aggregation, stored as is in MongoDB,
snapshots and the changelog. Reading out differs from storing for `avg` (stored as
`[sum, n]`) and `distinct_count` (stored as the exact values, or a HyperLogLog sketch
past its limit: Apache DataSketches, base64 in the document).
"""

from __future__ import annotations

import base64
import bisect
import importlib
from collections.abc import Callable
from typing import Any

import datasketches
import orjson

from tidemark.config.aggregation import AggregationSpec
from tidemark.config.base import field_path
from tidemark.operators.events import INT64, RecordError, StepError, get_path

Accumulator = dict[str, Any]
HLL_LG_K = 11  # 2^11 registers: about 2.3% standard error in about 1 KiB


def _number(value: Any, path: tuple[str, ...]) -> int | float:
    x = get_path(value, path)
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise RecordError(f"field {'.'.join(path)!r} must be a number, got {x!r}", "wrong_type")
    return x


def _sum(a: int | float, b: int | float, path: tuple[str, ...]) -> int | float:
    """A sum MongoDB can store: an integer past 64 bits is the record's fault, not a crash."""
    total = a + b
    if isinstance(total, int) and not INT64[0] <= total <= INT64[1]:
        raise RecordError(
            f"the sum of {'.'.join(path)!r} leaves the 64-bit integer range", "overflow"
        )
    return total


def _sketch(values: list[str] | None = None, b64: str | None = None) -> Any:
    if b64 is not None:
        return datasketches.hll_sketch.deserialize(base64.b64decode(b64))
    sketch = datasketches.hll_sketch(HLL_LG_K)
    for v in values or ():
        sketch.update(v)
    return sketch


def _store_sketch(sketch: Any) -> dict[str, str]:
    return {"hll": base64.b64encode(sketch.serialize_compact()).decode()}


def _distinct_key(x: Any) -> str:
    """Values compare as their JSON text would: 1 and "1" are distinct, 1 and 1.0 are not."""
    if isinstance(x, str):
        return "s" + x
    return "j" + repr(x)


def load_reducer(spec: str) -> Callable[[Any, Any], Any]:
    """The user's `module:function` reducer: `reducer(accumulated or None, value) -> new`."""
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise StepError(f"cannot import {module_name!r}: {exc}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise StepError(f"{module_name!r} has no callable {name!r}")
    return fn  # type: ignore[no-any-return]


class Aggregation:
    """One named aggregation over one field."""

    def __init__(self, name: str, spec: AggregationSpec) -> None:
        self.name, self.function, self.limit = name, spec.function, spec.limit or 0
        self.path = field_path(spec.field or "") if spec.function != "python" else ()
        self._reducer = load_reducer(spec.field or "") if spec.function == "python" else None
        self.fold: Callable[[Accumulator, Any], None] = getattr(self, f"_fold_{spec.function}")

    # One method per function, picked once: this runs for every record.
    def _fold_count(self, acc: Accumulator, value: Any) -> None:
        acc[self.name] = acc.get(self.name, 0) + 1

    def _fold_sum(self, acc: Accumulator, value: Any) -> None:
        acc[self.name] = _sum(acc.get(self.name, 0), _number(value, self.path), self.path)

    def _fold_min(self, acc: Accumulator, value: Any) -> None:
        x = _number(value, self.path)
        acc[self.name] = x if self.name not in acc else min(acc[self.name], x)

    def _fold_max(self, acc: Accumulator, value: Any) -> None:
        x = _number(value, self.path)
        acc[self.name] = x if self.name not in acc else max(acc[self.name], x)

    def _fold_avg(self, acc: Accumulator, value: Any) -> None:
        s, k = acc.get(self.name, (0, 0))
        acc[self.name] = [_sum(s, _number(value, self.path), self.path), k + 1]

    def _fold_first(self, acc: Accumulator, value: Any) -> None:
        if self.name not in acc:
            acc[self.name] = get_path(value, self.path)

    def _fold_last(self, acc: Accumulator, value: Any) -> None:
        acc[self.name] = get_path(value, self.path)

    # Stored values are never changed in place: the one in memory may be in a flush that
    # is being encoded for MongoDB, which must write it as it was at the cut.
    def _fold_collect(self, acc: Accumulator, value: Any) -> None:
        items = acc.get(self.name, [])
        if len(items) < self.limit:
            acc[self.name] = [*items, get_path(value, self.path)]

    def _fold_distinct_count(self, acc: Accumulator, value: Any) -> None:
        key = _distinct_key(get_path(value, self.path))
        stored = acc.get(self.name, {"x": []})
        if "hll" in stored:
            sketch = _sketch(b64=stored["hll"])
            sketch.update(key)
            acc[self.name] = _store_sketch(sketch)
            return
        values: list[str] = stored["x"]
        at = bisect.bisect_left(values, key)
        if at < len(values) and values[at] == key:
            return
        values = [*values[:at], key, *values[at:]]
        acc[self.name] = {"x": values}
        if len(values) > self.limit:  # past the exact bound: an estimate from here on
            acc[self.name] = _store_sketch(_sketch(values))

    def _fold_python(self, acc: Accumulator, value: Any) -> None:
        assert self._reducer is not None
        current = acc.get(self.name)
        given = None if current is None else orjson.loads(orjson.dumps(current))
        try:  # on a copy, so the reducer may change what it is given; JSON in and out
            new = self._reducer(given, value)
            orjson.dumps(new)
        except Exception as exc:
            raise RecordError(f"{type(exc).__name__}: {exc}", "python_error") from exc
        acc[self.name] = new

    def merge(self, into: Accumulator, other: Accumulator) -> None:
        """Fold `other` (a later session) into `into` (an earlier one)."""
        n, fn = self.name, self.function
        if n not in other:
            return
        if n not in into:
            into[n] = other[n]
            return
        a, b = into[n], other[n]
        if fn in ("count", "sum"):
            into[n] = _sum(a, b, self.path)
        elif fn in ("min", "max"):
            into[n] = min(a, b) if fn == "min" else max(a, b)
        elif fn == "avg":
            into[n] = [_sum(a[0], b[0], self.path), a[1] + b[1]]
        elif fn == "last":
            into[n] = b
        elif fn == "collect":
            into[n] = (a + b)[: self.limit]
        elif fn == "distinct_count":
            union = datasketches.hll_union(HLL_LG_K)
            for side in (a, b):
                union.update(_sketch(side.get("x"), side.get("hll")))
            exact = sorted(set(a.get("x", ())) | set(b.get("x", ())))
            both_exact = "hll" not in a and "hll" not in b and len(exact) <= self.limit
            into[n] = {"x": exact} if both_exact else _store_sketch(union.get_result())
        elif fn == "python":
            raise AssertionError("python reducers are refused in session windows at load")

    def result(self, acc: Accumulator) -> Any:
        """The value this aggregation reports."""
        stored = acc.get(self.name)
        if self.function == "avg" and stored is not None:
            return stored[0] / stored[1]
        if self.function == "distinct_count":
            if stored is None:
                return 0
            if "hll" in stored:
                return round(_sketch(b64=stored["hll"]).get_estimate())
            return len(stored["x"])
        return stored


# How `Accumulators.folded` handles each aggregation: the common ones of a top-level field
# inline, everything else (and every record they would refuse) through `Aggregation.fold`.
# The first five are also `_direct.c`'s.
_SUM, _MIN, _MAX, _FIRST, _LAST, _OTHER = range(6)
_INLINE = {"sum": _SUM, "min": _MIN, "max": _MAX, "first": _FIRST, "last": _LAST}
_LOW, _HIGH = INT64
_MISSING = object()


class Accumulators:
    """Every aggregation of a step, over one accumulator dict."""

    def __init__(self, compute: dict[str, AggregationSpec]) -> None:
        self.aggregations = [Aggregation(name, spec) for name, spec in compute.items()]
        self.counts = tuple(a.name for a in self.aggregations if a.function == "count")
        self._plan = [
            (a.name, _INLINE.get(a.function, _OTHER) if len(a.path) == 1 else _OTHER, a)
            for a in self.aggregations
            if a.function != "count"
        ]
        # The result of these is the accumulator itself (`result` reads each entry as is).
        self._plain = all(a.function in ("count", *_INLINE) for a in self.aggregations)
        # What the native fold (`_direct.fold`) takes besides `counts`, when it covers every
        # aggregation: plain ones of top-level fields, as (name, how, field).
        self.native_plan = (
            tuple((name, how, a.path[0]) for name, how, a in self._plan)
            if self._plain and all(how != _OTHER for _, how, _ in self._plan)
            else None
        )

    def fold(self, acc: Accumulator, value: Any) -> None:
        for a in self.aggregations:
            a.fold(acc, value)

    def folded(self, stored: Accumulator | None, value: Any) -> Accumulator:
        """A new accumulator: `stored` (left as it is) with `value` folded in; the same as
        `fold` on a copy, with the common aggregations inline, since this runs per record."""
        acc = dict(stored) if stored else {}
        if type(value) is not dict:
            self.fold(acc, value)  # raises: the aggregations read fields of an object
            return acc
        for name in self.counts:
            acc[name] = acc.get(name, 0) + 1
        for name, how, aggregation in self._plan:
            x: Any = value.get(aggregation.path[0], _MISSING) if how != _OTHER else _MISSING
            kind = type(x)
            number = kind is int or kind is float  # not bool: a subclass, and refused
            if how == _SUM and number:
                total = acc.get(name, 0) + x
                if _LOW <= total <= _HIGH or type(total) is float:
                    acc[name] = total
                    continue
            elif how == _LAST and x is not _MISSING:
                acc[name] = x
                continue
            elif how in (_MIN, _MAX) and number:
                old = acc.get(name, x)  # as the builtins: the earlier one on a tie
                acc[name] = (x if x < old else old) if how == _MIN else (x if x > old else old)
                continue
            elif how == _FIRST and (name in acc or x is not _MISSING):
                acc.setdefault(name, x)
                continue
            aggregation.fold(acc, value)  # everything else, and what the above refuses
        return acc

    def merge(self, into: Accumulator, other: Accumulator) -> None:
        for a in self.aggregations:
            a.merge(into, other)

    def result(self, acc: Accumulator) -> dict[str, Any]:
        if self._plain and len(acc) == len(self.aggregations):
            return acc  # read as is: no copy (accumulators are never changed in place)
        return {a.name: a.result(acc) for a in self.aggregations}
