"""State TTL in event time for keyed steps: `aggregate` without a window, stateful `python`.

A key lives until stream time (`timers.py`: the largest event time the step has seen in the
partition, never the wall clock) reaches its latest event time plus `ttl`:

- it reads as absent as soon as `latest + ttl <= stream time`, the current record's time
  included, so the record that finds it so starts fresh, whatever the batch boundaries;
- its document is removed by its timer `t|<latest + ttl>|<key>` at the end of the batch that
  made it due, stamped with the offset of the record that did (`Clock.offset_reaching`): a
  replay then skips every record the removed value held and never resurrects it;
- each update moves the timer (delete the old, set the new); an out-of-order record applies
  but cannot shorten the key's life, since `latest` is the largest event time applied;
- a record whose own `t + ttl` is already past stream time is applied and its output
  emitted, but its state is expired at once: deleted, with no timer.

Values are stored as `{"v": value, "ts": latest}` under `k|<key>` (a prefix, as every
clocked step's keys have, so a group key never meets a timer or the clock's document).
"""

from __future__ import annotations

from typing import Any, cast

from tidemark.config.base import field_path
from tidemark.config.state import Stamped, State
from tidemark.operators.events import Event, OnError, RecordError, record_time
from tidemark.operators.pipeline import StatefulOperator
from tidemark.operators.timers import Clock, timer_key


class Expiring:
    """A keyed step (`key_of`, `apply` per event) run a batch at a time, with a TTL on its
    keys. The step sees its values as before; expiry is this wrapper's business."""

    stateful = True
    batched = True
    fans_out = False

    def __init__(self, inner: StatefulOperator, ttl: int, time: str | None = None) -> None:
        self.id = inner.id
        self.inner = inner
        self._ttl = ttl
        self._time = field_path(time) if time else None

    async def run(self, events: list[Event], state: State, on_error: OnError) -> list[Event]:
        """Apply a batch in offset order, then remove what its stream time expired."""
        read: list[tuple[Event, str, int]] = []
        for event in events:
            try:
                read.append((event, self.inner.key_of(event), record_time(event, self._time)))
            except RecordError as exc:
                on_error(event, exc)
        await state.prefetch({value_key(k) for _, k, _ in read})
        clock = await Clock.load(state)
        living = Living(state, clock, self._ttl)
        out: list[Event] = []
        for event, key, t in read:
            clock.observe(t, event.offset)
            living.time = t
            try:
                result = self.inner.apply(event, key, cast(State, living))
            except RecordError as exc:
                on_error(event, exc)
                continue
            if result is not None:
                out.append(result)
        await self._expire(clock, state)
        return out

    async def _expire(self, clock: Clock, state: State) -> None:
        due = await clock.due(state)
        if not due:
            return
        await state.prefetch({value_key(key) for _, key, _ in due})
        for when, key, offset in due:
            found = state.get(value_key(key))
            latest = _latest(found.value) if found is not None else None
            at = max(offset, 0)
            if found is not None and latest is not None and latest + self._ttl == when:
                at = max(at, found.offset)  # else the key moved on: a stale timer
                state.delete(value_key(key), at)
            state.delete(timer_key(when, key), at)


class Living:
    """The wrapped step's view of its state: values unwrapped, expired ones absent (with
    their stamp, for the recovery rule), and writes that keep each key's timer in step.
    `time` is the event time of the record being applied."""

    def __init__(self, state: State, clock: Clock, ttl: int) -> None:
        self._state, self._clock, self._ttl = state, clock, ttl
        self.time = 0

    def get(self, key: str) -> Stamped | None:
        found = self._state.get(value_key(key))
        if found is None or found.value is None:
            return found
        if found.value["ts"] + self._ttl <= self._clock.now:
            return Stamped(None, found.offset)
        return Stamped(found.value["v"], found.offset)

    def put(self, key: str, value: Any, offset: int) -> None:
        old_due, live = self._stored_due(key)
        latest = max(self.time, old_due - self._ttl) if live and old_due is not None else self.time
        due = latest + self._ttl
        moved = old_due != due or not live
        if moved and old_due is not None:
            self._state.delete(timer_key(old_due, key), offset)
        if due <= self._clock.now:
            self._state.delete(value_key(key), offset)  # expired at once: as if it had fired
            return
        self._state.put(value_key(key), {"v": value, "ts": latest}, offset)
        if moved:
            self._clock.set_timer(self._state, due, key, latest, offset)

    def delete(self, key: str, offset: int) -> None:
        old_due, _ = self._stored_due(key)
        if old_due is not None:
            self._state.delete(timer_key(old_due, key), offset)
        self._state.delete(value_key(key), offset)

    def _stored_due(self, key: str) -> tuple[int | None, bool]:
        """The due time of the stored value's timer (None: no value, or no timer), and
        whether it is still live."""
        found = self._state.get(value_key(key))
        latest = _latest(found.value) if found is not None else None
        if latest is None:
            return None, False
        due = latest + self._ttl
        return due, due > self._clock.now


def value_key(key: str) -> str:
    """Where a key's value is stored."""
    return f"k|{key}"


def _latest(stored: Any) -> int | None:
    """The latest event time of a stored value (None: deleted)."""
    return None if stored is None else int(stored["ts"])
