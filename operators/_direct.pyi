"""The direct path's fold, in C (`_direct.c`)."""

from collections.abc import Callable
from typing import Any

class Entry:
    """A table's accumulator of one key (`config/state.py`, `Table`)."""

    @property
    def value(self) -> Any: ...
    @property
    def offset(self) -> int: ...
    owned: bool

def fold(
    records: list[tuple[str, Any, int, int]],
    latest: dict[str, tuple[Any, int]],
    entries: dict[str, Any],
    dirty: set[str],
    counts: tuple[str, ...],
    plan: tuple[tuple[str, int, str], ...],
    slow: Callable[[str, Any, int, int, Any], Any],
    result: Callable[[dict[str, Any]], Any],
    dumps: Callable[[Any], bytes],
    emit_from: int,
) -> list[tuple[bytes, bytes, int]]: ...
def missing(keys: set[str], entries: dict[str, Any]) -> list[str]: ...
