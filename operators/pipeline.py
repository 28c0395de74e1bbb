"""Run a batch of events through the operators in order, one stage at a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from tidemark.config.state import State
from tidemark.operators.events import Event, RecordError


class StatelessOperator(Protocol):
    id: str
    stateful: bool

    def apply(self, event: Event) -> Event | None: ...


class StatefulOperator(Protocol):
    id: str
    stateful: bool

    def key_of(self, event: Event) -> str: ...

    def apply(self, event: Event, key: str, state: State) -> Event | None: ...


Operator = StatelessOperator | StatefulOperator
OnError = Callable[[Event, RecordError], None]


class Pipeline:
    """Operators in order. Batch-first: each stage sees the whole batch before the next.

    Before a stateful stage the keys of the whole batch are computed once and prefetched
    with one call, so the per-event `get`s that follow never go to storage.
    """

    def __init__(self, operators: Sequence[Operator]) -> None:
        self.operators = list(operators)

    @property
    def stateful_ids(self) -> list[str]:
        return [op.id for op in self.operators if op.stateful]

    async def process(
        self, events: list[Event], states: Mapping[str, State], on_error: OnError
    ) -> list[Event]:
        """Outputs of the batch in input order; an event whose record is at fault
        (`RecordError`) goes to `on_error`; any other error propagates: it is a bug."""
        for op in self.operators:
            if op.stateful:
                events = await _stateful_stage(op, events, states[op.id], on_error)  # type: ignore[arg-type]
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
        if result is not None:
            out.append(result)
    return out


async def _stateful_stage(
    op: StatefulOperator, events: list[Event], state: State, on_error: OnError
) -> list[Event]:
    keyed: list[tuple[Event, str]] = []
    for event in events:
        try:
            keyed.append((event, op.key_of(event)))
        except RecordError as exc:
            on_error(event, exc)
    await state.prefetch({key for _, key in keyed})
    out: list[Event] = []
    for event, key in keyed:
        try:
            result = op.apply(event, key, state)
        except RecordError as exc:
            on_error(event, exc)
            continue
        if result is not None:
            out.append(result)
    return out
