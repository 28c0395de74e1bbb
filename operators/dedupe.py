"""The `dedupe` step: pass the first record of an id, drop its resends for a span of event time.

Per record (id i, event time t, offset o), in offset order within a source partition:

- stream time st = max(st, t), this record included (`timers.py`);
- i's entry holds the event time `first` of the record that started it; it lives while
  `first + within > st`;
- while it lives, a record of i is a duplicate, dropped and counted, whatever its own time
  (one older than `first` too: an entry says "i was seen", not "i was seen at first");
- otherwise (no entry, or an expired one) the record passes and starts the entry, unless
  `t + within <= st` already: such an entry would be expired at once, so none is kept.

State keys: `d|<i>` holds `first`; `t|<first + within>|<i>` is its expiry timer. Expiry
deletes both, stamped with the offset of the record that moved stream time there, so a
replay with other batch boundaries drops and passes exactly the same records. An expired
entry the timer has not removed yet (it becomes due later in the same batch) already
counts as expired, so decisions never depend on where batches were cut.
"""

from __future__ import annotations

from tidemark.config.base import field_path
from tidemark.config.dedupe import Dedupe as DedupeSpec
from tidemark.config.state import State
from tidemark.operators.events import Event, OnError, RecordError, key_string, record_time
from tidemark.operators.timers import Clock, timer_key


class Dedupe:
    """Drops records whose id was seen within `within` of event time."""

    stateful = True
    batched = True
    fans_out = False

    def __init__(self, spec: DedupeSpec) -> None:
        self.id = spec.id
        self._key = field_path(spec.key)
        self._time = field_path(spec.time) if spec.time else None
        self._within = spec.within
        self.duplicates_dropped = 0  # since the pipeline last took the count (metrics)

    async def run(self, events: list[Event], state: State, on_error: OnError) -> list[Event]:
        """The records of the batch that are not duplicates, in offset order."""
        read: list[tuple[Event, str, int]] = []
        for event in events:
            try:
                ident = key_string(event.value, self._key)
                read.append((event, ident, record_time(event, self._time)))
            except RecordError as exc:
                on_error(event, exc)
        await state.prefetch({_entry_key(ident) for _, ident, _ in read})
        clock = await Clock.load(state)
        out = []
        for event, ident, t in read:
            clock.observe(t, event.offset)
            if self._passes(event, ident, t, clock, state):
                out.append(event)
        await self._expire(clock, state)
        return out

    def _passes(self, event: Event, ident: str, t: int, clock: Clock, state: State) -> bool:
        key = _entry_key(ident)
        current = state.get(key)
        if current is not None and current.offset >= event.offset:
            return False  # applied before a crash (below C: its output went out then)
        first = current.value if current is not None else None
        if first is not None and first + self._within > clock.now:
            self.duplicates_dropped += 1
            return False
        # An expired entry still stored is left to its timer, due in this very batch (it
        # sees the entry was replaced and removes only itself).
        if t + self._within > clock.now:
            state.put(key, t, event.offset)
            clock.set_timer(state, t + self._within, ident, t, event.offset)
        return True

    async def _expire(self, clock: Clock, state: State) -> None:
        due = await clock.due(state)
        if not due:
            return
        await state.prefetch({_entry_key(ident) for _, ident, _ in due})
        for when, ident, offset in due:
            key = _entry_key(ident)
            current = state.get(key)
            first = current.value if current is not None else None
            at = max(offset, 0)
            if current is not None and first is not None and first + self._within == when:
                at = max(at, current.offset)  # else a later record replaced the entry
                state.delete(key, at)
            state.delete(timer_key(when, ident), at)


def _entry_key(ident: str) -> str:
    return f"d|{ident}"
