"""Driving a batched operator over the in-memory state: in batches cut as asked, and after a
simulated crash (W behind, a partial flush of a later cut), to compare with one run."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from tidemark.config.state import Stamped
from tidemark.operators import Event, InMemoryState, RecordError
from tidemark.operators.pipeline import BatchOperator


class Run:
    """Feeds events to a batch operator; collects outputs and `(offset, reason)` errors."""

    def __init__(self, op: BatchOperator, state: InMemoryState | None = None) -> None:
        self.op, self.state = op, state or InMemoryState()
        self.outputs: list[Event] = []
        self.errors: list[tuple[int, str]] = []

    async def feed(self, events: Sequence[Event]) -> list[Event]:
        def on_error(event: Event, exc: RecordError) -> None:
            self.errors.append((event.offset, exc.reason))

        out = await self.op.run(list(events), self.state, on_error)
        self.outputs += out
        return out

    async def feed_cut(self, events: Sequence[Event], cuts: Sequence[int]) -> list[int]:
        """Feed in batches of the sizes in `cuts` (cycled); the index each batch ended at."""
        ends, i, n = [], 0, 0
        while i < len(events):
            size = cuts[n % len(cuts)]
            await self.feed(events[i : i + size])
            i, n = min(i + size, len(events)), n + 1
            ends.append(i)
        return ends

    def live(self) -> dict[str, Any]:
        """Keys with a value (deletes and stamps left out): what any run must agree on."""
        return {k: v.value for k, v in self.state.data.items() if v.value is not None}


def summary(events: list[Event]) -> list[tuple[Any, ...]]:
    return [(e.key, e.offset, e.timestamp, repr(e.value)) for e in events]


async def crash_and_replay(
    make_op: Callable[[], BatchOperator],
    events: list[Event],
    cuts: Sequence[int],
    w: int,
    c: int,
    seed: int,
) -> tuple[list[Event], list[Event]]:
    """Outputs at or past C of a run cut by `cuts`, and of a run that crashed in the flush of
    cut `c` with W still at cut `w` (`w <= c`, indexes into the batch ends) and replayed from
    W in batches of another size: the timers that cut set were written (the store writes
    them first), any other part of the flush may have landed or not; stream times and other
    clocks are read as of W (`state/clocks.py`)."""
    first = Run(make_op())
    cuts_at: list[tuple[dict[str, Stamped], int, dict[str, int]]] = [
        ({}, first.state.stream_time, {})
    ]
    ends = [0]
    i, n = 0, 0
    while i < len(events):
        size = cuts[n % len(cuts)]
        await first.feed(events[i : i + size])
        i, n = min(i + size, len(events)), n + 1
        ends.append(i)
        cuts_at.append((dict(first.state.data), first.state.stream_time, dict(first.state.clocks)))
    w, c = min(w, len(ends) - 1), min(c, len(ends) - 1)
    w, c = min(w, c), max(w, c)
    at_w, time_w, clocks_w = cuts_at[w]
    at_c, _, _ = cuts_at[c]
    rng = random.Random(seed)
    stored = dict(at_w)
    for key, stamped in at_c.items():
        if at_w.get(key) == stamped:
            continue
        if (key.startswith("t|") and stamped.value is not None) or rng.random() < 0.5:
            stored[key] = stamped
    state = InMemoryState()
    state.data, state.stream_time, state.clocks = stored, time_w, dict(clocks_w)
    again = Run(make_op(), state)
    await again.feed_cut(events[ends[w] :], [rng.randint(1, 5)])
    emit_from = events[ends[c]].offset if ends[c] < len(events) else events[-1].offset + 1
    return (
        [e for e in first.outputs if e.offset >= emit_from],
        [e for e in again.outputs if e.offset >= emit_from],
    )


async def reassigned(
    make_op: Callable[[], BatchOperator], events: list[Event], cuts: Sequence[int], moves: set[int]
) -> Run:
    """A run cut by `cuts` whose partition moves to another worker after each batch index in
    `moves`: the new owner starts from what the last state checkpoint left (values, stream
    times and clocks; deleted keys swept away) with a new operator and nothing in memory.
    Its outputs and errors are those of the whole run."""
    whole = Run(make_op())
    run = Run(make_op())
    i, n = 0, 0
    while i < len(events):
        size = cuts[n % len(cuts)]
        await run.feed(events[i : i + size])
        i, n = min(i + size, len(events)), n + 1
        if n in moves:
            state = InMemoryState()
            state.data = {k: v for k, v in run.state.data.items() if v.value is not None}
            state.stream_time, state.clocks = run.state.stream_time, dict(run.state.clocks)
            whole.outputs += run.outputs
            whole.errors += run.errors
            run = Run(make_op(), state)
    whole.outputs += run.outputs
    whole.errors += run.errors
    whole.state = run.state
    return whole
