"""A dict-backed `State` for unit tests and dry runs."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tidemark.config.state import Stamped


class InMemoryState:
    """`State` over a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Stamped] = {}

    async def prefetch(self, keys: Collection[str]) -> None:
        return None

    def get(self, key: str) -> Stamped | None:
        return self.data.get(key)

    def put(self, key: str, value: Any, offset: int) -> None:
        self.data[key] = Stamped(value, offset)

    def delete(self, key: str, offset: int) -> None:
        self.data[key] = Stamped(None, offset)
