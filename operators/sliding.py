"""Sliding windows over a keyed aggregate: Kafka Streams' `SlidingWindows`.

Windows are `[start, start + size]`, both ends inclusive (`timeDifference = size`), and
exist only where records make them differ: each record has a left window `[t - size, t]`
and, once a later record of its key falls within `size` after it, a right window
`[t + 1, t + 1 + size]`. Per record (key k, event time t), as `KStreamSlidingWindowAggregate`:

- stream time st = max(st, t); a record with `t + 1 + size <= st - grace` is late;
- existing windows holding t are updated, a missing left window is created from the
  previous window's aggregate, the previous record's right window and this record's right
  window are created when a record falls in them; records before `size` share `[0, size]`;
- a window is updated while `end >= st - grace`, and with `emit: on_close` emitted once
  `end + grace <= st` (Kafka Streams' `suppress(untilWindowCloses)`); an update exactly at
  that edge emits it again, as Kafka Streams does.

State keys: `l|<k>` holds k's windows (`start`, accumulator `acc`, largest event time `ts`,
last offset `off`, `closed`), kept after closing until no later record can look them up
(`start + 3 size + grace < st`); two timers per window: `t|<end + grace>|e<start>|<k>` to
emit it and `t|<start + 3 size + grace + 1>|r<start>|<k>` to remove it.
"""

from __future__ import annotations

from typing import Any

from tidemark.config.aggregation import Aggregate, Sliding
from tidemark.config.state import State
from tidemark.operators.accumulators import Accumulator, Accumulators
from tidemark.operators.events import Event, OnError, RecordError, iso
from tidemark.operators.timers import Clock, split_ident, timer_key, window_ident
from tidemark.operators.window import TimedInput, bounds

Window = dict[str, Any]
STORE_CLOCK = "store"  # the window store's stream time: the largest window start put


class _Record:
    """One record's pass over its key's windows (the state of `process` in Kafka Streams)."""

    def __init__(
        self, op: SlidingAggregate, event: Event, key: str, t: int, st: int, store_time: int
    ) -> None:
        self.op, self.event, self.key, self.t = op, event, key, t
        self.close_time = st - op.grace
        # Kafka Streams' window store hides windows that start before its own stream time
        # (the largest window start it was given) minus its retention, 2 size + grace.
        self.store_time = store_time
        self.visible_from = store_time - op.retention + 1
        self.changed: list[Window] = []  # created or updated, for timers and on_update

    def update(self, windows: dict[int, Window], start: int, acc: Accumulator, ts: int) -> None:
        """Kafka Streams' `updateWindowAndForward`: fold the record into the window at
        `start` (whose aggregate and timestamp so far are `acc`, `ts`) unless it expired."""
        if start + self.op.size < self.close_time:
            return
        new = dict(acc)
        self.op.acc.fold(new, self.event.value)
        window = {"start": start, "acc": new, "ts": max(self.t, ts), "off": self.event.offset}
        window["closed"] = windows[start]["closed"] if start in windows else False
        windows[start] = window
        self.changed.append(window)
        self.store_time = max(self.store_time, start)

    def put(self, windows: dict[int, Window], start: int, acc: Accumulator, ts: int) -> None:
        """A window with this aggregate, without the record (the record's right window)."""
        window = {"start": start, "acc": acc, "ts": ts, "off": self.event.offset, "closed": False}
        windows[start] = window
        self.changed.append(window)
        self.store_time = max(self.store_time, start)


class SlidingAggregate:
    """A keyed aggregate per sliding window."""

    stateful = True
    batched = True
    fans_out = True

    def __init__(self, spec: Aggregate) -> None:
        assert isinstance(spec.window, Sliding)
        self.id = spec.id
        self._input = TimedInput(spec)
        self.acc = Accumulators(spec.compute)
        self.size, self.grace = spec.window.size, spec.window.grace
        self.retention = 2 * self.size + self.grace  # Kafka Streams' default for sliding
        self._on_close = spec.emits_on_close
        self._dead_letter_late = spec.on_late == "dead_letter"
        self.late_dropped = 0

    async def run(self, events: list[Event], state: State, on_error: OnError) -> list[Event]:
        """Apply a batch; the outputs (updates, or windows closed by it) in offset order."""
        read = self._input.read_all(events, on_error)
        await state.prefetch({_windows_key(k) for _, k, _ in read})
        clock = await Clock.load(state)
        store_time = await state.load_stream_time(STORE_CLOCK)
        out: list[Event] = []
        for event, key, t in read:
            before = clock.now
            clock.observe(t, event.offset)
            try:
                store_time = self._apply(event, key, t, before, clock, store_time, state, out)
            except RecordError as exc:
                on_error(event, exc)
        state.set_stream_time(store_time, STORE_CLOCK)
        out += await self._fire(clock, state)
        out.sort(key=lambda e: e.offset)
        return out

    def _apply(
        self,
        event: Event,
        key: str,
        t: int,
        before: int,
        clock: Clock,
        store_time: int,
        state: State,
        out: list[Event],
    ) -> int:
        """Apply one record; the window store's stream time after it."""
        wkey = _windows_key(key)
        current = state.get(wkey)
        if current is not None and current.offset >= event.offset:
            return store_time  # applied before a crash (its windows moved the store's time)
        st = clock.now
        if t + 1 + self.size <= st - self.grace:
            if self._dead_letter_late:
                raise RecordError(f"late: {iso(t)} is past every window's grace", "late")
            self.late_dropped += 1
            return store_time
        windows = {w["start"]: w for w in (current.value or [])} if current is not None else {}
        # What earlier records of this batch made due happens first, as it would have
        # between records: emit, then (much later) remove.
        for start in sorted(windows):
            self._due_before(windows, key, start, before, clock, state, out)
        pre = dict(windows)  # as the record found them (updates replace, never change)
        record = _Record(self, event, key, t, st, store_time)
        if t < self.size:
            self._early(record, windows)
        else:
            self._reverse(record, windows)
        self._suppress(record, pre, windows, st, clock, state, out)
        state.put(wkey, [windows[s] for s in sorted(windows)], event.offset)
        return record.store_time

    def _suppress(
        self,
        r: _Record,
        pre: dict[int, Window],
        windows: dict[int, Window],
        st: int,
        clock: Clock,
        state: State,
        out: list[Event],
    ) -> None:
        """What `suppress(untilWindowCloses)` emits of this key around the record's forwards:
        its stream time reaches this record's at the first forward, so every window this
        record made due is emitted then, as it was before the record changed it (unless it
        is that first forward); then each forward of a window due is emitted as forwarded,
        so a window forwarded twice is emitted twice. Windows not due wait for their timer."""
        key, offset = r.key, r.event.offset

        def due(start: int) -> bool:
            return start + self.size + self.grace <= st

        newly_due = [s for s, w in pre.items() if not w["closed"] and due(s)]
        if self._on_close and r.changed:
            first = r.changed[0]["start"]
            out += [self._result(key, pre[s], offset) for s in newly_due if s != first]
        for window in r.changed:
            if not self._on_close or due(window["start"]):
                out.append(self._result(key, window, offset))
        for start in sorted({w["start"] for w in r.changed} | set(newly_due)):
            if due(start):
                self._mark_closed(windows, key, start, offset, clock, state)
            else:
                windows[start] = {**windows[start], "closed": False}
                end = start + self.size
                ident = window_ident(start, key, "e")
                clock.set_timer(state, end + self.grace, ident, end, offset)

    def _reverse(self, r: _Record, windows: dict[int, Window]) -> None:
        """`processReverse`: the windows from `t - 2 size` to `t + 1`, newest first."""
        t, size = r.t, self.size
        seen: set[int] = set()
        left = right = None
        left_made = right_made = False
        previous = None
        for start in sorted(windows, reverse=True):
            if not max(0, t - 2 * size, r.visible_from) <= start <= t + 1:
                continue
            w = windows[start]
            seen.add(start)
            end = start + size
            if start == t + 1:
                right_made = True
            elif end > t:
                right = right or (w["acc"], w["ts"])
                r.update(windows, start, w["acc"], w["ts"])
            elif end == t:
                left_made = True
                r.update(windows, start, w["acc"], w["ts"])
                if w["ts"] >= t:
                    return  # a record at t already made every window this one needs
                previous = w["ts"]
            else:
                left, previous = (w["acc"], w["ts"]), w["ts"]
                break
        if previous is not None and previous + 1 not in seen and previous + 1 + size >= t:
            r.update(windows, previous + 1, {}, t)  # the previous record's right window
        if not left_made:
            near = previous is not None and t - size <= previous and left is not None
            r.update(windows, t - size, left[0] if near and left else {}, t)
        if not right_made and right is not None and right[1] > t:
            r.put(windows, t + 1, *right)

    def _early(self, r: _Record, windows: dict[int, Window]) -> None:
        """`processEarly`: records before `size` share the window `[0, size]`."""
        t = r.t
        seen: set[int] = set()
        combined = right = None
        right_made = False
        previous = None
        for start in sorted(windows):
            if start > t + 1:
                break
            if start < r.visible_from:
                continue
            w = windows[start]
            seen.add(start)
            if start == 0:
                combined = w
                if w["ts"] < t:
                    previous = w["ts"]
            elif start <= t:
                right = (w["acc"], w["ts"])
                r.update(windows, start, w["acc"], w["ts"])
            else:
                right_made = True
        if right is None and combined is not None and combined["ts"] > t:
            right = (combined["acc"], combined["ts"])
        if not right_made and right is not None and right[1] > t:
            r.put(windows, t + 1, *right)
        if previous is not None and previous + 1 not in seen:
            r.update(windows, previous + 1, {}, t)
        if combined is None:
            r.update(windows, 0, {}, t)
        else:
            r.update(windows, 0, combined["acc"], combined["ts"])

    def _due_before(
        self,
        windows: dict[int, Window],
        key: str,
        start: int,
        before: int,
        clock: Clock,
        state: State,
        out: list[Event],
    ) -> None:
        w = windows[start]
        emit_at = start + self.size + self.grace
        if not w["closed"] and emit_at <= before:
            at = max(clock.offset_reaching(emit_at), w["off"])
            self._close(windows, key, start, at, clock, state, out)
        remove_at = self._removed_at(start)
        if w["closed"] and remove_at <= before:
            state.delete(timer_key(remove_at, window_ident(start, key, "r")), w["off"])
            del windows[start]

    def _close(
        self,
        windows: dict[int, Window],
        key: str,
        start: int,
        at: int,
        clock: Clock,
        state: State,
        out: list[Event],
    ) -> None:
        """Emit a window's final result, and keep it for lookups until it is removed."""
        if self._on_close:
            out.append(self._result(key, windows[start], at))
        self._mark_closed(windows, key, start, at, clock, state)

    def _mark_closed(
        self,
        windows: dict[int, Window],
        key: str,
        start: int,
        at: int,
        clock: Clock,
        state: State,
    ) -> None:
        """Emitted: no emission timer any more; kept for lookups until its removal."""
        end = start + self.size
        state.delete(timer_key(end + self.grace, window_ident(start, key, "e")), at)
        windows[start] = {**windows[start], "closed": True, "off": max(windows[start]["off"], at)}
        clock.set_timer(state, self._removed_at(start), window_ident(start, key, "r"), end, at)

    def _removed_at(self, start: int) -> int:
        """No record that is not late can look a window up once stream time is here."""
        return start + 3 * self.size + self.grace + 1

    async def _fire(self, clock: Clock, state: State) -> list[Event]:
        due = await clock.due(state)
        if not due:
            return []
        await state.prefetch({_windows_key(split_ident(ident)[2]) for _, ident, _ in due})
        out: list[Event] = []
        touched: dict[str, tuple[dict[int, Window], int]] = {}
        for when, ident, offset in due:
            kind, start, key = split_ident(ident)
            if key not in touched:
                current = state.get(_windows_key(key))
                windows = {w["start"]: w for w in (current.value or [])} if current else {}
                touched[key] = (windows, current.offset if current is not None else -1)
            windows, stamp = touched[key]
            w = windows.get(start)
            at = max(offset, w["off"] if w else -1)
            state.delete(timer_key(when, ident), at)
            if w is None:
                continue  # handled before a crash; this timer's delete did not land
            if kind == "e" and not w["closed"]:
                self._close(windows, key, start, at, clock, state, out)
            elif kind == "r" and w["closed"]:
                del windows[start]
            touched[key] = (windows, max(stamp, at))
        for key, (windows, stamp) in touched.items():
            if windows:
                state.put(_windows_key(key), [windows[s] for s in sorted(windows)], stamp)
            else:
                state.delete(_windows_key(key), stamp)
        return out

    def _result(self, key: str, w: Window, offset: int) -> Event:
        value = {**self.acc.result(w["acc"]), **bounds(w["start"], w["start"] + self.size)}
        return Event(key, value, offset, w["ts"])


def _windows_key(key: str) -> str:
    return f"l|{key}"
