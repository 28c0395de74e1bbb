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
