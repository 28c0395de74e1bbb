"""A dict-backed `State` for unit tests and dry runs."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from tidemark.config.state import NO_TIME, Stamped, Table


class InMemoryState:
    """`State` over a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Stamped] = {}
        self.stream_time = NO_TIME
        self.clocks: dict[str, int] = {}  # named clocks besides `stream_time`
        self._table = Table()

    async def prefetch(self, keys: Collection[str]) -> None:
        return None

    def get(self, key: str) -> Stamped | None:
        return self.data.get(key)  # a deleted key keeps its stamp, as in MongoDB

    def put(self, key: str, value: Any, offset: int) -> None:
        self.data[key] = Stamped(value, offset)

    def delete(self, key: str, offset: int) -> None:
        self.data[key] = Stamped(None, offset)

    async def read(self, keys: Collection[str]) -> dict[str, Stamped]:
        return {k: found for k in keys if (found := self.data.get(k)) is not None}

    def write(self, values: Mapping[str, tuple[Any, int]]) -> None:
        self.data.update((key, Stamped(*pair)) for key, pair in values.items())

    def table(self) -> Table:
        return self._table

    def settle(self, entries: int = 1 << 31) -> None:
        """Write the table's changes into `data`, as a store's flush does, keeping at most
        about `entries` in the table (`Table.evict`)."""
        self._table.evict(entries)
        self.data.update((key, Stamped(v, off)) for key, v, off in self._table.take_dirty())

    async def scan(self, low: str, high: str) -> list[tuple[str, Stamped]]:
        return [
            (k, v) for k, v in sorted(self.data.items()) if low <= k < high and v.value is not None
        ]

    async def load_stream_time(self, name: str = "") -> int:
        return self.clocks.get(name, NO_TIME) if name else self.stream_time

    def set_stream_time(self, millis: int, name: str = "") -> None:
        if name:
            self.clocks[name] = millis
        else:
            self.stream_time = millis
