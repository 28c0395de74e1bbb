"""Operators that keep no state: filter, map, project."""

from __future__ import annotations

from tidemark.operators.events import Event, RecordError
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
