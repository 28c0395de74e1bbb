"""Keyed aggregate: count, sum, min, max, avg, first, last per group key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tidemark.config.model import Aggregate
from tidemark.config.model import field_path as parse_path
from tidemark.config.state import State
from tidemark.operators.events import INT64, Event, RecordError, get_path, key_string

Accumulator = dict[str, Any]
Step = Callable[[Accumulator, Any], None]


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


def _step(name: str, function: str, field: str | None) -> Step:
    path = parse_path(field or "")

    def count(acc: Accumulator, _: Any) -> None:
        acc[name] = acc.get(name, 0) + 1

    def total(acc: Accumulator, value: Any) -> None:
        acc[name] = _sum(acc.get(name, 0), _number(value, path), path)

    def minimum(acc: Accumulator, value: Any) -> None:
        x = _number(value, path)
        acc[name] = x if name not in acc else min(acc[name], x)

    def maximum(acc: Accumulator, value: Any) -> None:
        x = _number(value, path)
        acc[name] = x if name not in acc else max(acc[name], x)

    def average(acc: Accumulator, value: Any) -> None:
        s, n = acc.get(name, (0, 0))
        acc[name] = [_sum(s, _number(value, path), path), n + 1]

    def first(acc: Accumulator, value: Any) -> None:
        if name not in acc:
            acc[name] = get_path(value, path)

    def last(acc: Accumulator, value: Any) -> None:
        acc[name] = get_path(value, path)

    steps: dict[str, Step] = {
        "count": count,
        "sum": total,
        "min": minimum,
        "max": maximum,
        "avg": average,
        "first": first,
        "last": last,
    }
    return steps[function]


class KeyedAggregate:
    """Fold each event into its group's accumulator and emit the new aggregate.

    The accumulator is what is stored; the emitted value is the same but for `avg`, stored
    as `[sum, n]` and emitted as the mean. An event at or below the offset stamped on its
    key was applied before a crash already and is skipped: that is the recovery rule.
    """

    stateful = True

    def __init__(self, spec: Aggregate) -> None:
        self.id = spec.id
        self._key = parse_path(spec.key)
        self._steps = [_step(name, fn, field) for name, (fn, field) in spec.compute.items()]
        self._averages = [name for name, (fn, _) in spec.compute.items() if fn == "avg"]

    def key_of(self, event: Event) -> str:
        return key_string(event.value, self._key)

    def apply(self, event: Event, key: str, state: State) -> Event | None:
        """Fold `event` (whose group key is `key`, from `key_of`) into its accumulator."""
        current = state.get(key)
        if current is not None and current.offset >= event.offset:
            return None
        acc: Accumulator = dict(current.value) if current is not None and current.value else {}
        for step in self._steps:
            step(acc, event.value)
        state.put(key, acc, event.offset)
        return Event(key, self._result(acc), event.offset, event.timestamp)

    def _result(self, acc: Accumulator) -> Accumulator:
        if not self._averages:
            return acc
        out = dict(acc)
        for name in self._averages:
            s, n = acc[name]
            out[name] = s / n
        return out
