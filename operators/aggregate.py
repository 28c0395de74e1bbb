"""Keyed aggregate without a window: one running accumulator per group key."""

from __future__ import annotations

from tidemark.config.aggregation import Aggregate
from tidemark.config.base import field_path
from tidemark.config.state import State
from tidemark.operators.accumulators import Accumulator, Accumulators
from tidemark.operators.events import Event, key_string


class KeyedAggregate:
    """Fold each event into its group's accumulator and emit the new aggregate.

    An event at or below the offset stamped on its key was applied before a crash already
    and is skipped: that is the recovery rule.
    """

    stateful = True

    def __init__(self, spec: Aggregate, keyed_by_source: bool = False) -> None:
        self.id = spec.id
        self._key = field_path(spec.key)
        self._acc = Accumulators(spec.compute)
        # The first step, grouping by the source's key field: the decoder read that very
        # field into the event's key already, and nothing has changed the record since.
        self._by_event_key = keyed_by_source

    def key_of(self, event: Event) -> str:
        if self._by_event_key and event.key is not None:
            return event.key
        return key_string(event.value, self._key)

    def apply(self, event: Event, key: str, state: State) -> Event | None:
        """Fold `event` (whose group key is `key`, from `key_of`) into its accumulator."""
        current = state.get(key)
        if current is not None and current.offset >= event.offset:
            return None
        acc: Accumulator = dict(current.value) if current is not None and current.value else {}
        for aggregation in self._acc.aggregations:
            aggregation.fold(acc, event.value)
        state.put(key, acc, event.offset)
        return Event(key, self._acc.result(acc), event.offset, event.timestamp)
