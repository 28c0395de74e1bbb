"""The chunk codec: what is written decodes to the same records."""

from __future__ import annotations

import zlib

import orjson
import pytest

from tidemark.state.chunks import CorruptPayload, _encode, decode


def test_records_round_trip_through_a_chunk() -> None:
    records = [("agg", "u:1", {"count": 3, "total": 1.5}, 41), ("agg", "ü", None, 0)]
    lines = [orjson.dumps(r) for r in records]
    assert list(decode(_encode(lines))) == records


def test_garbage_is_a_corrupt_payload() -> None:
    with pytest.raises(CorruptPayload, match="does not decompress"):
        list(decode(b"not zlib"))
    assert zlib.decompress(_encode([b"[1]"])) == b"[1]"
