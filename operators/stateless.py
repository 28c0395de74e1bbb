"""Operators that keep no state: filter, map, project, rename, flat_map, route."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tidemark.config.model import field_path
from tidemark.operators.events import Event, RecordError, get_path
from tidemark.operators.expressions import Expression


class Filter:
    """Keep events for which the expression is true."""

    stateful = False

    def __init__(self, expression: str) -> None:
        self.id = f"filter({expression})"
        self._test = Expression(expression)

    def apply(self, event: Event) -> Event | None:
        return event if self._test(event.value) else None


class Map:
    """Set fields to expression results (`{amount_eur: "amount * 0.92"}`); others unchanged."""

    stateful = False

    def __init__(self, fields: dict[str, str]) -> None:
        self.id = f"map({', '.join(fields)})"
        self._fields = [(name, Expression(expr)) for name, expr in fields.items()]

    def apply(self, event: Event) -> Event | None:
        value = dict(event.value) if isinstance(event.value, dict) else None
        if value is None:
            raise RecordError("map needs a JSON object value", "not_an_object")
        for name, expression in self._fields:
            value[name] = expression(event.value)
        return Event(event.key, value, event.offset, event.timestamp)


class Project:
    """Keep only the named top-level fields."""

    stateful = False

    def __init__(self, fields: list[str]) -> None:
        self.id = f"project({', '.join(fields)})"
        self._fields = tuple(fields)

    def apply(self, event: Event) -> Event | None:
        if not isinstance(event.value, dict):
            raise RecordError("project needs a JSON object value", "not_an_object")
        value = {f: event.value[f] for f in self._fields if f in event.value}
        return Event(event.key, value, event.offset, event.timestamp)


class Rename:
    """Rename top-level fields (`{user_id: user}`), all at once (so `{a: b, b: a}` swaps); a
    field that is absent is left alone, and a renamed field replaces one of its new name."""

    stateful = False

    def __init__(self, fields: dict[str, str]) -> None:
        self.id = f"rename({', '.join(fields)})"
        self._fields = dict(fields)

    def apply(self, event: Event) -> Event | None:
        value = event.value
        if not isinstance(value, dict):
            raise RecordError("rename needs a JSON object value", "not_an_object")
        moves = {old: new for old, new in self._fields.items() if old in value}
        if not moves:
            return event
        replaced = set(moves.values())
        out: dict[str, Any] = {}
        for name, field in value.items():
            if name in moves:
                out[moves[name]] = field
            elif name not in replaced:
                out[name] = field
        return replace(event, value=out)


class FlatMap:
    """One output per element of an array field, in order; none for an empty array.

    Each output is the record with the array replaced by the element (so the element keeps
    its context: the order id beside each line item), or with `as`, the record without the
    array and the element under that top-level field. Outputs keep the record's key, offset
    and time.
    """

    stateful = False
    fans_out = True  # outputs share their record's offset (see `Pipeline`)

    def __init__(self, field: str, as_: str | None = None) -> None:
        self.id = f"flat_map({field})"
        self._name = field
        self._path = field_path(field)
        self._as = as_

    def apply(self, event: Event) -> list[Event]:
        if not isinstance(event.value, dict):
            raise RecordError("flat_map needs a JSON object value", "not_an_object")
        items = get_path(event.value, self._path)
        if not isinstance(items, list):
            raise RecordError(
                f"flat_map field {self._name!r} must be an array, got {_json_type(items)}",
                "wrong_type",
            )
        if self._as is None:
            return [replace(event, value=_set(event.value, self._path, item)) for item in items]
        rest = _set(event.value, self._path, _DROP)
        return [replace(event, value={**rest, self._as: item}) for item in items]


class Route:
    """Choose each record's topic: that of the first branch whose expression holds, else
    `otherwise`; with neither, the record stays on the sink (dropped if there is none)."""

    stateful = False

    def __init__(self, branches: list[tuple[str, str]], otherwise: str | None) -> None:
        self.id = f"route({', '.join(t for _, t in branches)})"
        self._branches = [(Expression(when), topic) for when, topic in branches]
        self._otherwise = otherwise

    def apply(self, event: Event) -> Event | None:
        for test, topic in self._branches:
            if test(event.value):
                return replace(event, topic=topic)
        return event if self._otherwise is None else replace(event, topic=self._otherwise)


_DROP = object()


def _set(value: dict[str, Any], path: tuple[str, ...], new: Any) -> dict[str, Any]:
    """`value` with the field at `path` (which exists) set to `new`, or removed for `_DROP`;
    copies only the objects on the path, so outputs never share a changed object."""
    head, rest = path[0], path[1:]
    out = dict(value)
    if rest:
        out[head] = _set(value[head], rest, new)
    elif new is _DROP:
        del out[head]
    else:
        out[head] = new
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return "a boolean" if value is not None else "null"
    return "a number"
