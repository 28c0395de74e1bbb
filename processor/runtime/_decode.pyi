"""The direct path's decode, in C (`_decode.c`)."""

from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

def decode(
    messages: list[Message],
    path: tuple[str, ...],
    shortest: int,
    loads: Callable[[bytes], Any],
    time_of: Callable[[Any], int] | None,
    slow: Callable[[Message], tuple[str, Any, int, int] | None],
    keys: set[str],
    fields: tuple[str, ...] | None,
) -> list[tuple[str, Any, int, int]]: ...
