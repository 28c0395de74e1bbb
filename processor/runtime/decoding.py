"""Kafka message to `Event`, or a `RecordError` saying why it cannot be one."""

from __future__ import annotations

from typing import Any

import orjson

from tidemark.config.model import Source, field_path
from tidemark.operators import Event, RecordError
from tidemark.operators.events import event_time, key_string

MAX_DEPTH = 200


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, iteratively (no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


class Decoder:
    """Decodes messages of one source as its topology says."""

    def __init__(self, source: Source) -> None:
        self._json = source.format == "json"
        self._key = field_path(source.key) if source.key else None
        self._max = source.max_record_bytes
        self._time = field_path(source.time) if source.time else None

    def decode(self, key: bytes | None, value: bytes | None, offset: int, ts: int) -> Event:
        if not value:
            raise RecordError("empty value", "empty")
        if len(value) > self._max:
            raise RecordError(
                f"record of {len(value)} bytes exceeds max_record_bytes={self._max}", "too_large"
            )
        body: Any = value
        if self._json:
            try:
                body = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise RecordError(f"malformed JSON: {exc}", "malformed_json") from exc
            if value.count(b"{") + value.count(b"[") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
                # orjson reads 1024 levels but writes 255: a record it could not write back
                # as an output would stop the worker, so it is refused here instead.
                raise RecordError(f"value nested deeper than {MAX_DEPTH} levels", "too_deep")
            if not isinstance(body, dict):
                raise RecordError(
                    f"value must be a JSON object, got {type(body).__name__}", "not_an_object"
                )
        if self._time is not None:
            ts = event_time(body, self._time)
        if self._key is not None:
            return Event(key_string(body, self._key), body, offset, ts)
        return Event(key.decode("utf-8", "replace") if key else None, body, offset, ts)
