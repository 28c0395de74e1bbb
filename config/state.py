"""The seam between operators and storage: per-operator, per-partition keyed state.

It lives in `config`, the one package both `operators` and `state` may import.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple, Protocol

from tidemark.config.errors import TidemarkError

NO_TIME = -1  # stream time before the first record
# Keys of timers (`operators/timers.py`): the store writes the ones being set before
# anything else of a flush, so no crash leaves a window without the timer that closes it.
TIMER_PREFIX = "t|"


class NotPrefetched(TidemarkError):
    """A key was read before its batch prefetched it: a bug in an operator, never a record's
    fault, so it stops the worker rather than dead-lettering the record."""


class Stamped(NamedTuple):
    """A stored value and the offset of the last event applied to it (`value` None: deleted)."""

    value: Any
    offset: int


class TableEntry(Protocol):
    """A `Table`'s value of one key (`_direct.Entry`, made by the C fold)."""

    @property
    def value(self) -> Any:
        """The value (an accumulator)."""

    @property
    def offset(self) -> int:
        """The offset of the last record applied to it."""

    owned: bool  # False: a flush holds the value, so the next change copies it first


class Table:
    """The values of one operator in one partition that the operator keeps in memory itself
    and changes in place (the direct path's accumulators, `operators/_direct.c`); the store
    only reads what the table lacks and writes back what changed, at each flush.

    `dirty`: the keys changed since the last flush; only their entries are `owned`.
    """

    def __init__(self) -> None:
        self.entries: dict[str, TableEntry] = {}
        self.dirty: set[str] = set()
        self.hits = 0  # keys of a batch found here, for the store's cache metrics

    def take_dirty(self) -> list[tuple[str, Any, int]]:
        """(key, value, offset) of each key changed since the last call, for a flush."""
        taken = []
        for key in self.dirty:
            entry = self.entries[key]
            entry.owned = False
            taken.append((key, entry.value, entry.offset))
        self.dirty = set()
        return taken

    def evict(self, limit: int) -> int:
        """Drop entries not changed since the last flush, while over `limit`; how many.
        A dropped key is read again when it comes back: from the flush if one still
        writes it, else from storage, which has it by then."""
        over = len(self.entries) - limit
        if over <= 0:
            return 0
        clean = [key for key in self.entries if key not in self.dirty][:over]
        for key in clean:
            del self.entries[key]
        return len(clean)

    def forget(self) -> None:
        self.entries.clear()
        self.dirty.clear()


class State(Protocol):
    """Keyed state of one operator in one partition."""

    async def prefetch(self, keys: Collection[str]) -> None:
        """Load these keys with one round trip so that the `get`s that follow are local."""

    def get(self, key: str) -> Stamped | None:
        """The stamped value of `key`, None if it was never written; `NotPrefetched` if the
        key was not prefetched."""

    def put(self, key: str, value: Any, offset: int) -> None:
        """Set `key` to `value` as of the event at `offset`."""

    async def read(self, keys: Collection[str]) -> dict[str, Stamped]:
        """The stamped values of those of `keys` that were written, with one round trip: an
        operator that folds a whole batch keeps them in a local dict and writes the last
        value of each key back once (`write`), instead of a `get` and a `put` per record."""

    def write(self, values: Mapping[str, tuple[Any, int]]) -> None:
        """`put` of each key's (value, offset)."""

    def delete(self, key: str, offset: int) -> None:
        """Delete `key` as of the event at `offset` (kept as a tombstone until checkpointed)."""

    def table(self) -> Table:
        """The operator's `Table` in this partition (one per operator and partition). An
        operator that uses it reads and changes its keys there only, `read` aside."""

    async def scan(self, low: str, high: str) -> list[tuple[str, Stamped]]:
        """Every live key in `[low, high)`, in key order, with its value; `get` then answers
        for them. Time-aware operators keep an index of keys by time (timers) this way, so
        closing what is due never reads the whole partition."""

    async def load_stream_time(self, name: str = "") -> int:
        """The operator's stream time in this partition (largest event time seen, -1 for
        none), as of the position the partition resumed from; `name` for another clock the
        operator keeps the same way (sliding windows keep their store's)."""

    def set_stream_time(self, millis: int, name: str = "") -> None:
        """Advance the stream time; stored with each state checkpoint, so recovery and
        replay see the stream time of the checkpoint they start from."""
