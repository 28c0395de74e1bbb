"""What flows between operators, and the error that marks one record as bad."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tidemark.config.errors import TidemarkError


@dataclass(slots=True)
class Event:
    """One record in flight: the offset is the source offset it derives from; `timestamp`
    its event time in epoch milliseconds (`source.time`, else the Kafka timestamp), which
    outputs carry as their Kafka timestamp; `topic` a sink chosen by `route` (None: the
    topology's sink)."""

    key: str | None
    value: Any
    offset: int
    timestamp: int = 0
    topic: str | None = None


INT64 = (-(2**63), 2**63 - 1)  # what MongoDB and a JSON sink can hold
MAX_TIME = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: event times are after 1970


class RecordError(TidemarkError):
    """This record cannot be processed (missing field, wrong type); it goes to dead letters.

    The only error a pipeline catches per record: any other one is a bug and stops the
    worker, which then recovers exactly on restart."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason  # a short category, for the dead-letter metric's label


OnError = Callable[[Event, RecordError], None]


def keyed(
    events: list[Event], key_of: Callable[[Event], str], on_error: OnError
) -> list[tuple[Event, str]]:
    """Each event with its key; an event whose key cannot be read goes to `on_error`."""
    out: list[tuple[Event, str]] = []
    for event in events:
        try:
            out.append((event, key_of(event)))
        except RecordError as exc:
            on_error(event, exc)
    return out


class StepError(TidemarkError):
    """A step that cannot be built (an expression not allowed, a custom callable that does
    not import, a misplaced `route`): a topology error, reported with its path at load.

    `path` is where in the topology; raised inside a step it may hold a suffix (`.id`) that
    `build_pipeline` prefixes with the step (`pipeline[2].python`)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


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


def event_time(value: Any, path: tuple[str, ...]) -> int:
    """Event time in epoch milliseconds from the field at `path`: an integer (or integral
    number) of milliseconds, or an ISO 8601 string (UTC unless it names an offset)."""
    raw = get_path(value, path)
    where = ".".join(path)
    if isinstance(raw, bool) or raw is None:
        raise RecordError(
            f"time field {where!r} must be epoch ms or ISO 8601, got {raw!r}", "bad_time"
        )
    if isinstance(raw, int | float):
        if raw != raw or raw in (float("inf"), float("-inf")) or not 0 <= raw <= MAX_TIME:
            raise RecordError(f"time field {where!r} out of range: {raw!r}", "bad_time")
        return int(raw)
    if isinstance(raw, str):
        try:
            parsed = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise RecordError(
                f"time field {where!r} is not ISO 8601: {raw[:60]!r}", "bad_time"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        millis = int(parsed.timestamp() * 1000)
        if not 0 <= millis <= MAX_TIME:
            raise RecordError(f"time field {where!r} out of range: {raw[:60]!r}", "bad_time")
        return millis
    raise RecordError(
        f"time field {where!r} must be epoch ms or ISO 8601, got {type(raw).__name__}", "bad_time"
    )


def record_time(event: Event, path: tuple[str, ...] | None) -> int:
    """A record's event time: the field at `path` if given, else its own (`source.time`, or
    the Kafka timestamp); `RecordError` if it is missing, unreadable or before 1970."""
    t = event_time(event.value, path) if path else event.timestamp
    if t < 0:
        raise RecordError(f"event time {t} is before 1970", "bad_time")
    return t


def iso(millis: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC, millisecond precision."""
    return (
        dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
