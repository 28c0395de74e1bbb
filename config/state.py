"""The seam between operators and storage: per-operator, per-partition keyed state.

It lives in `config`, the one package both `operators` and `state` may import.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple, Protocol

from tidemark.config.errors import TidemarkError


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

    def delete(self, key: str, offset: int) -> None:
        """Delete `key` as of the event at `offset` (kept as a tombstone until checkpointed)."""
