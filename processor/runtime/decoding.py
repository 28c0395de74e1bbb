"""Kafka message to `Event`, or a `RecordError` saying why it cannot be one."""

from __future__ import annotations

from typing import Any

import orjson

from tidemark.config.model import Source, field_path
from tidemark.operators import Event, RecordError
from tidemark.operators.events import key_string


class Decoder:
    """Decodes messages of one source as its topology says."""

    def __init__(self, source: Source) -> None:
        self._json = source.format == "json"
        self._key = field_path(source.key) if source.key else None
        self._max = source.max_record_bytes

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
            if not isinstance(body, dict):
                raise RecordError(
                    f"value must be a JSON object, got {type(body).__name__}", "not_an_object"
                )
        if self._key is not None:
            return Event(key_string(body, self._key), body, offset, ts)
        return Event(key.decode("utf-8", "replace") if key else None, body, offset, ts)
