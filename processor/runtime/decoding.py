"""Kafka message to `Event`, or a `RecordError` saying why it cannot be one."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from confluent_kafka import Message

from tidemark.config.model import Source, field_path
from tidemark.operators import Event, RecordError
from tidemark.operators.aggregate import Folded
from tidemark.operators.events import event_time, key_string
from tidemark.processor.runtime import _decode

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
        self.json = source.format == "json"
        self.key = field_path(source.key) if source.key else None
        self._max = source.max_record_bytes
        self._time = field_path(source.time) if source.time else None

    def decode(self, key: bytes | None, value: bytes | None, offset: int, ts: int) -> Event:
        body = self._body(value)
        if self._time is not None:
            ts = event_time(body, self._time)
        if self.key is not None:
            return Event(key_string(body, self.key), body, offset, ts)
        return Event(key.decode("utf-8", "replace") if key else None, body, offset, ts)

    def folded(
        self,
        messages: list[Message],
        key: tuple[str, ...],
        failures: dict[int, RecordError],
        keys: set[str],
        fields: tuple[str, ...] | None = None,
    ) -> list[Folded]:
        """The records of a batch for the direct path (`KeyedAggregate.fold_batch`): group
        key (the field at `key`), value, offset and event time; the checks of `decode` and
        the aggregate's `key_of`, in that order. `failures` gets the others, by offset;
        `keys` each record's group key. Given `fields`, a value keeps only those of them it
        has (`KeyedAggregate.fields`).

        The common record (short enough to need no depth check, an object, a non-empty
        string key) is decoded in C (`_decode.decode`); any other goes through `_folded`."""
        path = self._time
        return _decode.decode(
            messages,
            key,
            min(self._max, 2 * MAX_DEPTH),  # a record this short cannot nest too deep
            orjson.loads,
            None if path is None else partial(event_time, path=path),
            partial(self._folded, key=key, failures=failures, fields=fields),
            keys,
            fields,
        )

    def _folded(
        self,
        m: Message,
        key: tuple[str, ...],
        failures: dict[int, RecordError],
        fields: tuple[str, ...] | None,
    ) -> Folded | None:
        offset: int = m.offset()  # type: ignore[assignment]  # `by_partition` kept ints
        try:
            body = self._body(m.value())
            ts = event_time(body, self._time) if self._time is not None else m.timestamp()[1]
            group = key_string(body, key)
            if fields is not None:
                body = {name: body[name] for name in fields if name in body}
            return group, body, offset, ts
        except RecordError as exc:
            failures[offset] = exc
            return None

    def _body(self, value: bytes | None) -> Any:
        if not value:
            raise RecordError("empty value", "empty")
        if len(value) > self._max:
            raise RecordError(
                f"record of {len(value)} bytes exceeds max_record_bytes={self._max}", "too_large"
            )
        if not self.json:
            return value
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"malformed JSON: {exc}", "malformed_json") from exc
        # Nesting deeper than MAX_DEPTH takes that many brackets opened and closed: most
        # records are too short to hold them, which spares them counting.
        deep = len(value) > 2 * MAX_DEPTH and value.count(b"{") + value.count(b"[") > MAX_DEPTH
        if deep and _depth(body) > MAX_DEPTH:
            # orjson reads 1024 levels but writes 255: a record it could not write back
            # as an output would stop the worker, so it is refused here instead.
            raise RecordError(f"value nested deeper than {MAX_DEPTH} levels", "too_deep")
        if type(body) is not dict:
            raise RecordError(
                f"value must be a JSON object, got {type(body).__name__}", "not_an_object"
            )
        return body
