"""Run a batch of events through the operators in order, one stage at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from tidemark.config.state import Stamped, State
from tidemark.operators.aggregate import KeyedAggregate
from tidemark.operators.events import Event, OnError, RecordError, keyed
from tidemark.operators.join import Join, TableFeed


class StatelessOperator(Protocol):
    id: str
    stateful: bool

    def apply(self, event: Event) -> Event | list[Event] | None: ...


class StatefulOperator(Protocol):
    id: str
    stateful: bool

    def key_of(self, event: Event) -> str: ...

    def apply(self, event: Event, key: str, state: State) -> Event | None: ...


@runtime_checkable
class BatchOperator(Protocol):
    """A stateful operator that takes a whole batch: time-aware ones, which close what the
    batch's stream time made due after applying its records (`timers.py`)."""

    id: str
    stateful: bool
    batched: bool

    async def run(self, events: list[Event], state: State, on_error: OnError) -> list[Event]: ...


Operator = StatelessOperator | StatefulOperator | BatchOperator | Join


class Pipeline:
    """Operators in order. Batch-first: each stage sees the whole batch before the next.

    Before a stateful stage the keys of the whole batch are computed once and prefetched
    with one call, so the per-event `get`s that follow never go to storage.
    """

    def __init__(self, operators: Sequence[Operator]) -> None:
        self.operators = list(operators)
        # Stages after one that fans out (`flat_map`, `python`) may see several events with
        # one offset: their state reads go through `_Siblings`.
        self._after_fan_out = [
            any(getattr(earlier, "fans_out", False) for earlier in self.operators[:i])
            for i in range(len(self.operators))
        ]

    def take_late_dropped(self) -> int:
        """Records windows dropped as late (`on_late: drop`) since the last call."""
        return self._take("late_dropped")

    def take_table_errors(self) -> int:
        """Table records joins skipped as not a JSON object (or without a key)."""
        return self._take("table_errors")

    @property
    def tables(self) -> list[str]:
        """The tables the joins read, in step order, without repeats."""
        return list(dict.fromkeys(op.table for op in self.operators if isinstance(op, Join)))

    def take_duplicates_dropped(self) -> int:
        """Records `dedupe` dropped as duplicates since the last call."""
        return self._take("duplicates_dropped")

    def _take(self, counter: str) -> int:
        total = 0
        for op in self.operators:
            if dropped := getattr(op, counter, 0):
                total += dropped
                setattr(op, counter, 0)
        return total

    @property
    def direct(self) -> KeyedAggregate | None:
        """The one step, if it is a keyed aggregate without window or ttl: batches then
        take the direct path (`BatchProcessor`), folded without an `Event` per record."""
        only = self.operators[0] if len(self.operators) == 1 else None
        return only if type(only) is KeyedAggregate else None

    @property
    def stateful_ids(self) -> list[str]:
        return [op.id for op in self.operators if op.stateful]

    async def process(
        self,
        events: list[Event],
        states: Mapping[str, State],
        on_error: OnError,
        feeds: Mapping[str, TableFeed] | None = None,
    ) -> list[Event]:
        """Outputs of the batch in input order; an event whose record is at fault
        (`RecordError`) goes to `on_error`; any other error propagates: it is a bug.
        `feeds` are the partition's table partitions, by table name, for joins."""
        for op, fanned in zip(self.operators, self._after_fan_out, strict=True):
            if op.stateful:
                state = cast(State, _Siblings(states[op.id])) if fanned else states[op.id]
                if isinstance(op, Join):
                    assert feeds is not None, "a pipeline with a join needs its table feeds"
                    events = await op.join(events, state, feeds[op.table], on_error)
                elif isinstance(op, BatchOperator):  # windows: the batch at once, with timers
                    events = await op.run(events, state, on_error)
                else:
                    events = await _stateful_stage(op, events, state, on_error)  # type: ignore[arg-type]
            else:
                events = _stateless_stage(op, events, on_error)  # type: ignore[arg-type]
        return events


def _stateless_stage(op: StatelessOperator, events: list[Event], on_error: OnError) -> list[Event]:
    out: list[Event] = []
    for event in events:
        try:
            result = op.apply(event)
        except RecordError as exc:
            on_error(event, exc)
            continue
        if isinstance(result, list):
            out.extend(result)
        elif result is not None:
            out.append(result)
    return out


class _Siblings:
    """A stage's view of a `State` for events that share an offset (the outputs of one
    record's `flat_map`), so that the recovery rule counts each of them.

    An operator skips an event whose key is stamped at or past its offset: the key was
    written before a crash. A sibling that wrote the key earlier in this same stage looks
    just like that, so such a stamp is shown one offset lower. A stamp written before the
    crash is shown as it is: state is cut between batches, so all of a record's siblings
    were applied then, and all are skipped now.
    """

    def __init__(self, state: State) -> None:
        self._state = state
        self._written: dict[str, int] = {}  # key: offset written in this stage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)  # whatever else a time-aware operator asks for

    async def prefetch(self, keys: Any) -> None:
        await self._state.prefetch(keys)

    def get(self, key: str) -> Stamped | None:
        found = self._state.get(key)
        if found is not None and self._written.get(key) == found.offset:
            return Stamped(found.value, found.offset - 1)
        return found

    def put(self, key: str, value: Any, offset: int) -> None:
        self._written[key] = offset
        self._state.put(key, value, offset)

    def delete(self, key: str, offset: int) -> None:
        self._written[key] = offset
        self._state.delete(key, offset)


async def _stateful_stage(
    op: StatefulOperator, events: list[Event], state: State, on_error: OnError
) -> list[Event]:
    pairs = keyed(events, op.key_of, on_error)
    await state.prefetch({key for _, key in pairs})
    out: list[Event] = []
    for event, key in pairs:
        try:
            result = op.apply(event, key, state)
        except RecordError as exc:
            on_error(event, exc)
            continue
        if result is not None:
            out.append(result)
    return out
