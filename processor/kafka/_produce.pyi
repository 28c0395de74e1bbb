"""The direct path's produce loop, in C (`_produce.c`)."""

from collections.abc import Callable
from typing import Any

def produce(
    send: Callable[..., Any],
    topic: str,
    records: list[tuple[bytes, bytes, int]],
    partition: int,
    low: int,
    high: int,
) -> int: ...
