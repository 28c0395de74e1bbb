"""Session windows over a keyed aggregate, with Kafka Streams' semantics.

Per record (group key k, event time t, offset o), as `KStreamSessionWindowAggregate`:

- stream time st = max(st, t), this record included;
- the record merges with every open session of k that ends at or after `t - gap` and
  starts at or before `t + gap` (exactly `gap` apart merge, `gap + 1` do not); the merged
  session spans `[first, last]` event time, both inclusive;
- it is late, and not applied, when the merged session's end < st - gap - grace;
- a session is closed once `end + gap + grace <= st`: emitted then with `emit: on_close`,
  and never merged into again (a later record near it starts a session of its own).

State keys: `s|<k>` holds k's open sessions (`start`, `end`, accumulator `acc`, largest
event time `ts`, last offset `off`; documents, as FerretDB stores no arrays of arrays);
`t|<end + gap + grace>|<start>|<k>` is each one's closing timer.
"""

from __future__ import annotations

from typing import Any

from tidemark.config.aggregation import Aggregate, Session
from tidemark.config.state import State
from tidemark.operators.accumulators import Accumulators
from tidemark.operators.events import Event, OnError, RecordError, StepError, iso
from tidemark.operators.timers import Clock, split_ident, timer_key, window_ident
from tidemark.operators.window import TimedInput, bounds


class SessionAggregate:
    """A keyed aggregate per session window."""

    stateful = True
    batched = True
    fans_out = True  # several outputs per record (hopping updates, closings)

    def __init__(self, spec: Aggregate) -> None:
        assert isinstance(spec.window, Session)
        if any(s.function == "python" for s in spec.compute.values()):
            raise StepError(
                "python reducers cannot merge sessions; use them without session windows"
            )
        self.id = spec.id
        self._input = TimedInput(spec)
        self._acc = Accumulators(spec.compute)
        self._gap, self._grace = spec.window.gap, spec.window.grace
        self._on_close = spec.emits_on_close
        self._dead_letter_late = spec.on_late == "dead_letter"
        self.late_dropped = 0

    async def run(self, events: list[Event], state: State, on_error: OnError) -> list[Event]:
        """Apply a batch; the outputs (updates, or sessions closed by it) in offset order."""
        read = self._input.read_all(events, on_error)
        await state.prefetch({_sessions_key(k) for _, k, _ in read})
        clock = await Clock.load(state)
        out: list[Event] = []
        for event, key, t in read:
            before = clock.now
            clock.observe(t, event.offset)
            try:
                self._apply(event, key, t, before, clock, state, out)
            except RecordError as exc:
                on_error(event, exc)
        out += await self._close(clock, state)
        out.sort(key=lambda e: e.offset)
        return out

    def _closes_at(self, end: int) -> int:
        return end + self._gap + self._grace

    def _apply(
        self,
        event: Event,
        key: str,
        t: int,
        before: int,
        clock: Clock,
        state: State,
        out: list[Event],
    ) -> None:
        skey = _sessions_key(key)
        current = state.get(skey)
        if current is not None and current.offset >= event.offset:
            return  # applied before a crash
        sessions: list[dict[str, Any]] = list(current.value or []) if current is not None else []
        st = clock.now
        # Kafka Streams merges first and then lets suppress emit: a session is out of reach
        # if stream time had closed it before this record, or if this record's time puts it
        # past retention (end + gap + grace < st), even if this batch has not closed it yet.
        merging = [
            s
            for s in sessions
            if before < self._closes_at(s["end"]) >= st
            and s["end"] >= t - self._gap
            and s["start"] <= t + self._gap
        ]
        start = min([t, *(s["start"] for s in merging)])
        end = max([t, *(s["end"] for s in merging)])
        if end < st - self._gap - self._grace:
            if self._dead_letter_late:
                raise RecordError(
                    f"late: session of {iso(t)} closed by stream time {iso(st)}", "late"
                )
            self.late_dropped += 1
            return
        # Sessions stream time closed earlier in this batch are closed now, before a new
        # session of this record can take the same start (and timer) as one of them.
        closed = [s for s in sessions if self._closes_at(s["end"]) <= before]
        for s in closed:
            when = self._closes_at(s["end"])
            at = max(clock.offset_reaching(when), s["off"])
            state.delete(timer_key(when, window_ident(s["start"], key)), at)
            self._emit_final(key, s, at, out)
        acc: dict[str, Any] = {}
        for s in sorted(merging, key=lambda s: s["start"]):
            self._acc.merge(acc, s["acc"])
            state.delete(
                timer_key(self._closes_at(s["end"]), window_ident(s["start"], key)), event.offset
            )
        self._acc.fold(acc, event.value)
        latest = max([t, *(s["ts"] for s in merging)])
        kept = [s for s in sessions if not any(s is m for m in [*merging, *closed])]
        merged = {"start": start, "end": end, "acc": acc, "ts": latest, "off": event.offset}
        state.put(skey, sorted([*kept, merged], key=lambda s: s["start"]), event.offset)
        clock.set_timer(state, self._closes_at(end), window_ident(start, key), end, event.offset)
        if not self._on_close:
            out.append(
                Event(key, {**self._acc.result(acc), **bounds(start, end)}, event.offset, latest)
            )

    def _emit_final(self, key: str, session: dict[str, Any], at: int, out: list[Event]) -> None:
        """A closed session's final result, with `emit: on_close`."""
        if self._on_close:
            value = {**self._acc.result(session["acc"]), **bounds(session["start"], session["end"])}
            out.append(Event(key, value, at, session["ts"]))

    async def _close(self, clock: Clock, state: State) -> list[Event]:
        due = await clock.due(state)
        if not due:
            return []
        await state.prefetch({_sessions_key(split_ident(ident)[2]) for _, ident, _ in due})
        out: list[Event] = []
        for when, ident, offset in due:
            _, start, key = split_ident(ident)
            skey = _sessions_key(key)
            current = state.get(skey)
            sessions = list(current.value or []) if current is not None else []
            found = next(
                (s for s in sessions if s["start"] == start and self._closes_at(s["end"]) == when),
                None,
            )
            at = max(offset, found["off"] if found else -1)
            state.delete(timer_key(when, ident), at)
            if found is None:
                continue  # closed before a crash; its timer's delete did not land
            self._emit_final(key, found, at, out)
            rest = [s for s in sessions if s is not found]
            stamp = max(at, current.offset if current is not None else -1)
            if rest:
                state.put(skey, rest, stamp)
            else:
                state.delete(skey, stamp)
        return out


def _sessions_key(key: str) -> str:
    return f"s|{key}"
