"""Tumbling and hopping windows over a keyed aggregate, with Kafka Streams' semantics.

Per record (group key k, event time t, offset o), as `KStreamWindowAggregate` does:

- stream time st = max(st, t), this record included;
- the record belongs to every window `[start, start + size)` with `start` a multiple of
  `step` (epoch-aligned) that contains t;
- a window whose `end + grace <= st` is closed: the record is late for it and not applied
  (decided per window, so a hopping record can count in some windows and not others);
- with `emit: on_update` each window the record changed is emitted at once; with
  `on_close` (Kafka Streams' `suppress(untilWindowCloses)`) each window is emitted once,
  when `end + grace <= st`, by the record that moved st there.

State keys: `w|<start>|<k>` holds the window's accumulator, its largest event time and
its end; `t|<end + grace>|<start>|<k>` is its closing timer (`timers.py`). Closing a
window deletes both, stamped with the closing record's offset, so a replay neither emits
it twice nor resurrects it.
"""

from __future__ import annotations

from typing import Any

from tidemark.config.aggregation import Aggregate, Hopping, Tumbling
from tidemark.config.base import field_path
from tidemark.config.state import State
from tidemark.operators.accumulators import Accumulators
from tidemark.operators.events import Event, OnError, RecordError, event_time, iso, key_string
from tidemark.operators.timers import Clock, split_ident, timer_key, window_ident


def windows_for(t: int, size: int, step: int) -> list[int]:
    """Starts of the windows holding time t (Kafka Streams' `TimeWindows.windowsFor`)."""
    start = max(0, t - size + step) // step * step
    return list(range(start, t + 1, step))


def bounds(start: int, end: int) -> dict[str, Any]:
    """What a windowed output carries besides its aggregates."""
    return {
        "window_start": start,
        "window_end": end,
        "window_start_iso": iso(start),
        "window_end_iso": iso(end),
    }


class TimedInput:
    """The group key and event time of a windowed step's input."""

    def __init__(self, spec: Aggregate) -> None:
        self._key = field_path(spec.key)
        self._time = field_path(spec.time) if spec.time else None

    def read_all(self, events: list[Event], on_error: OnError) -> list[tuple[Event, str, int]]:
        """`(event, group key, event time)` of each event that has both; the others go to
        `on_error`."""
        read = []
        for event in events:
            try:
                key, t = self.read(event)
            except RecordError as exc:
                on_error(event, exc)
                continue
            read.append((event, key, t))
        return read

    def read(self, event: Event) -> tuple[str, int]:
        """`(group key, event time)`; `RecordError` for a missing or bad field."""
        key = key_string(event.value, self._key)
        t = event_time(event.value, self._time) if self._time else event.timestamp
        if t < 0:
            raise RecordError(f"event time {t} is before 1970", "bad_time")
        return key, t


class TimeWindowAggregate:
    """A keyed aggregate per tumbling or hopping window."""

    stateful = True
    batched = True
    fans_out = True  # several outputs per record (hopping updates, closings)

    def __init__(self, spec: Aggregate) -> None:
        assert isinstance(spec.window, Tumbling | Hopping)
        self.id = spec.id
        self._input = TimedInput(spec)
        self._acc = Accumulators(spec.compute)
        self._size, self._step, self._grace = spec.window.size, spec.window.step, spec.window.grace
        self._on_close = spec.emits_on_close
        self._dead_letter_late = spec.on_late == "dead_letter"
        self.late_dropped = 0  # records late for some or all of their windows, not dead-lettered

    async def run(self, events: list[Event], state: State, on_error: OnError) -> list[Event]:
        """Apply a batch; the outputs (updates, or windows closed by it) in offset order."""
        read = self._input.read_all(events, on_error)
        await state.prefetch(
            {_window_key(s, k) for _, k, t in read for s in windows_for(t, self._size, self._step)}
        )
        clock = await Clock.load(state)
        out: list[Event] = []
        for event, key, t in read:
            clock.observe(t, event.offset)
            try:
                self._apply(event, key, t, clock, state, out)
            except RecordError as exc:
                on_error(event, exc)
        out += await self._close(clock, state)
        out.sort(key=lambda e: e.offset)
        return out

    def _apply(
        self, event: Event, key: str, t: int, clock: Clock, state: State, out: list[Event]
    ) -> None:
        applied = late = 0
        for start in windows_for(t, self._size, self._step):
            end = start + self._size
            if end + self._grace <= clock.now:
                late += 1
                continue
            applied += 1
            wkey = _window_key(start, key)
            current = state.get(wkey)
            if current is not None and current.offset >= event.offset:
                continue  # applied before a crash (or closed: then it was late anyway)
            stored = current.value if current is not None else None
            acc = dict(stored["a"]) if stored else {}
            self._acc.fold(acc, event.value)
            latest = max(t, stored["ts"]) if stored else t
            state.put(wkey, {"a": acc, "ts": latest, "end": end}, event.offset)
            if stored is None:
                clock.set_timer(
                    state, end + self._grace, window_ident(start, key), end, event.offset
                )
            if not self._on_close:
                value = {**self._acc.result(acc), **bounds(start, end)}
                out.append(Event(key, value, event.offset, latest))
        if late and not applied:
            if self._dead_letter_late:
                raise RecordError(f"late: event time {iso(t)} is past every window's grace", "late")
            self.late_dropped += 1

    async def _close(self, clock: Clock, state: State) -> list[Event]:
        due = await clock.due(state)
        if not due:
            return []
        starts = {ident: split_ident(ident)[1:] for _, ident, _ in due}
        await state.prefetch({_window_key(s, k) for s, k in starts.values()})
        out = []
        for when, ident, offset in due:
            start, key = starts[ident]
            wkey = _window_key(start, key)
            current = state.get(wkey)
            if current is None or current.value is None:
                state.delete(timer_key(when, ident), max(offset, 0))
                continue  # closed before a crash; its timer's delete did not land
            offset = max(offset, current.offset)
            if self._on_close:
                stored = current.value
                value = {**self._acc.result(stored["a"]), **bounds(start, stored["end"])}
                out.append(Event(key, value, offset, stored["ts"]))
            state.delete(wkey, offset)
            state.delete(timer_key(when, ident), offset)
        return out


def _window_key(start: int, key: str) -> str:
    return f"w|{window_ident(start, key)}"
