"""Keyed aggregate without a window: one running accumulator per group key."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

from tidemark.config.aggregation import Aggregate
from tidemark.config.base import field_path
from tidemark.config.state import State
from tidemark.operators import _direct
from tidemark.operators.accumulators import Accumulators
from tidemark.operators.events import Event, OnError, RecordError, key_string

# A record of the direct path, and its output: group key, value, offset, event time.
Folded = tuple[str, Any, int, int]
# Each key's accumulator and the offset stamped on it.
Latest = dict[str, tuple[Any, int]]


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

    @property
    def key_path(self) -> tuple[str, ...]:
        return self._key

    def key_of(self, event: Event) -> str:
        if self._by_event_key and event.key is not None:
            return event.key
        return key_string(event.value, self._key)

    def apply(self, event: Event, key: str, state: State) -> Event | None:
        """Fold `event` (whose group key is `key`, from `key_of`) into its accumulator."""
        current = state.get(key)
        if current is not None and current.offset >= event.offset:
            return None
        acc = self._acc.folded(current.value if current is not None else None, event.value)
        state.put(key, acc, event.offset)
        return Event(key, self._acc.result(acc), event.offset, event.timestamp)

    async def latest(self, keys: Collection[str], state: State) -> Latest:
        """The stored accumulator and offset of each of a batch's `keys` (the direct path of
        `processor/runtime/batch.py`): one `State.read` for the batch."""
        return dict(await state.read(keys))

    async def unheld(self, keys: set[str], state: State) -> Latest:
        """`latest` of those of `keys` the state's table lacks (`fold_encoded`'s read)."""
        table = state.table()
        missing = _direct.missing(keys, table.entries)  # `keys - entries.keys()` walks both
        table.hits += len(keys) - len(missing)
        return dict(await state.read(missing)) if missing else {}

    def fold_batch(
        self, records: list[Folded], latest: Latest, state: State, on_error: OnError
    ) -> list[Folded]:
        """`apply` over a batch whose group keys and state are read already: the same
        outputs, with one `write` of state for the batch and no per-record objects but the
        new accumulator."""
        written: Latest = {}
        folded, result = self._acc.folded, self._acc.result
        out: list[Folded] = []
        for key, value, offset, timestamp in records:
            current = latest.get(key)
            if current is not None and current[1] >= offset:
                continue  # applied before a crash: the recovery rule, as in `apply`
            try:
                acc = folded(current[0] if current is not None else None, value)
            except RecordError as exc:
                on_error(Event(key, value, offset, timestamp), exc)
                continue
            latest[key] = written[key] = (acc, offset)
            out.append((key, result(acc), offset, timestamp))
        state.write(written)
        return out

    @property
    def encodes(self) -> bool:
        """Whether `fold_encoded` covers this step: its output is its accumulator, and its
        aggregations are those the native fold does inline."""
        return self._acc.native_plan is not None

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields of a record `fold_encoded` reads: a record may keep only these."""
        plan = self._acc.native_plan
        assert plan is not None, "fields needs `encodes`"
        return tuple(dict.fromkeys(field for _, _, field in plan))

    def fold_encoded(
        self,
        records: list[Folded],
        latest: Latest,
        state: State,
        on_error: OnError,
        emit_from: int,
    ) -> list[tuple[bytes, bytes, int]]:
        """`fold_batch` with each output encoded as (key, JSON value, event time), those at
        or past `emit_from` only, folded in C (`_direct.c`) into the state's table, where
        `latest` (from `unheld`) fills in what it lacks; a record the C does not cover goes
        through `Accumulators.folded`."""
        plan = self._acc.native_plan
        assert plan is not None, "fold_encoded needs `encodes`"
        folded = self._acc.folded

        def refold(key: str, value: Any, offset: int, timestamp: int, current: Any) -> Any:
            try:
                return folded(current, value)
            except RecordError as exc:
                on_error(Event(key, value, offset, timestamp), exc)
                return None

        table = state.table()
        return _direct.fold(
            records,
            latest,
            table.entries,
            table.dirty,
            self._acc.counts,
            plan,
            refold,
            self._acc.result,
            orjson.dumps,
            emit_from,
        )
