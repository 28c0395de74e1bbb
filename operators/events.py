"""What flows between operators, and the error that marks one record as bad."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidemark.config.errors import TidemarkError


@dataclass(slots=True)
class Event:
    """One record in flight: the offset is the source offset it derives from."""

    key: str | None
    value: Any
    offset: int
    timestamp: int = 0


INT64 = (-(2**63), 2**63 - 1)  # what MongoDB and a JSON sink can hold


class RecordError(TidemarkError):
    """This record cannot be processed (missing field, wrong type); it goes to dead letters.

    The only error a pipeline catches per record: any other one is a bug and stops the
    worker, which then recovers exactly on restart."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason  # a short category, for the dead-letter metric's label


_MISSING = object()


def get_path(value: Any, path: tuple[str, ...]) -> Any:
    """The field at `path` inside a JSON object; `RecordError` when absent."""
    current = value
    for part in path:
        if not isinstance(current, dict):
            raise RecordError(
                f"field {'.'.join(path)!r} is missing: value is not a JSON object", "missing_field"
            )
        current = current.get(part, _MISSING)
        if current is _MISSING:
            raise RecordError(f"field {'.'.join(path)!r} is missing", "missing_field")
    return current


def key_string(value: Any, path: tuple[str, ...]) -> str:
    """A group key from the field at `path`: strings as is, integers in decimal."""
    key = get_path(value, path)
    if isinstance(key, str) and key:
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise RecordError(
        f"key field {'.'.join(path)!r} must be a non-empty string or an integer, got {key!r}",
        "bad_key",
    )
