"""When time-aware operators act: stream time, and an index of keys by the time they close.

Stream time is per operator and source partition: the largest event time seen, never the
wall clock (`State.load_stream_time`). What must happen once stream time passes a point
(a window closes, a dedupe entry expires) is a timer: a state key `t|<time>|<id>` whose
zero-padded time makes key order time order, so `State.scan` over `[t|<last>, t|<now>]`
finds exactly what became due in a batch, without reading the rest of the partition.

Each due timer is attributed to the record whose event time first made it due, so the
output it causes carries that record's offset whatever the batch boundaries were: a
replay suppresses or emits it exactly as the first run did.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from tidemark.config.state import TIMER_PREFIX, State

PREFIX = TIMER_PREFIX
_WIDTH = 15  # epoch milliseconds up to year 33658


def timer_key(due: int, ident: str) -> str:
    """The state key of a timer that fires once stream time reaches `due`."""
    return f"{PREFIX}{due:0{_WIDTH}d}|{ident}"


def parse_timer(key: str) -> tuple[int, str]:
    """`(due, ident)` of a timer key."""
    due, _, ident = key[len(PREFIX) :].partition("|")
    return int(due), ident


def window_ident(start: int, key: str, kind: str = "") -> str:
    """What a timer of the window starting at `start` of group `key` names; `kind` tells
    apart the timers of one window (a letter)."""
    return f"{kind}{start:0{_WIDTH}d}|{key}"


def split_ident(ident: str) -> tuple[str, int, str]:
    """`(kind, start, key)` of a `window_ident`."""
    head, _, key = ident.partition("|")
    digits = len(head) - _WIDTH
    return head[:digits], int(head[digits:]), key


@dataclass
class Clock:
    """Stream time through one batch: where it started and each record that raised it."""

    start: int
    raised_at: list[int] = field(default_factory=list)  # stream time after each rise
    offsets: list[int] = field(default_factory=list)  # the offset of the record that rose
    _set_due: bool = False  # a timer set in this batch is due already

    @classmethod
    async def load(cls, state: State) -> Clock:
        return cls(await state.load_stream_time())

    @property
    def now(self) -> int:
        return self.raised_at[-1] if self.raised_at else self.start

    def observe(self, millis: int, offset: int) -> int:
        """A record's event time; the stream time after it."""
        if millis > self.now:
            self.raised_at.append(millis)
            self.offsets.append(offset)
        return self.now

    def offset_reaching(self, due: int) -> int:
        """The offset of the first record of the batch after which stream time >= `due`
        (-1 if it was there before the batch)."""
        i = bisect.bisect_left(self.raised_at, due)
        return self.offsets[i] if i < len(self.offsets) else -1

    def set_timer(self, state: State, due: int, ident: str, value: object, offset: int) -> None:
        """Set a timer (a non-None `value` to keep with it) as of `offset`."""
        state.put(timer_key(due, ident), value, offset)
        self._set_due = self._set_due or due <= self.now

    async def due(self, state: State) -> list[tuple[int, str, int]]:
        """Timers that became due in this batch, in time order: `(due, ident, offset)`,
        the offset being the record that made it due (-1: it was due when set, so the
        caller attributes it to the record that set it). Timers due before the batch's
        start were handled by an earlier batch."""
        if not self.raised_at and not self._set_due:
            return []
        low = timer_key(max(self.start, 0), "")
        high = timer_key(self.now + 1, "")
        found = []
        for key, _ in await state.scan(low, high):
            due, ident = parse_timer(key)
            found.append((due, ident, self.offset_reaching(due)))
        state.set_stream_time(self.now)
        return found
