"""Decoding and dead-letter wrapping of raw records."""

from __future__ import annotations

import pytest

from tidemark.config.model import Source
from tidemark.operators import RecordError
from tidemark.processor.runtime.deadletters import MAX_DEAD_LETTER_BYTES, dead_letter
from tidemark.processor.runtime.decoding import Decoder


def test_json_with_key_field() -> None:
    event = Decoder(Source(topic="t", key="user.id")).decode(b"k", b'{"user": {"id": 7}}', 5, 9)
    assert (event.key, event.value, event.offset, event.timestamp) == (
        "7",
        {"user": {"id": 7}},
        5,
        9,
    )


def test_kafka_key_when_no_key_field() -> None:
    assert Decoder(Source(topic="t")).decode(b"k1", b"{}", 0, 0).key == "k1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "empty value"),
        (None, "empty value"),
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"other": 1}', "field 'user' is missing"),
        (b"x" * 101, "exceeds max_record_bytes=100"),
    ],
)
def test_bad_records(value: bytes | None, message: str) -> None:
    decoder = Decoder(Source(topic="t", key="user", max_record_bytes=100))
    with pytest.raises(RecordError, match=message):
        decoder.decode(None, value, 0, 0)


def test_dead_letter_headers_and_truncation() -> None:
    big = b"x" * (MAX_DEAD_LETTER_BYTES + 10)
    letter = dead_letter(b"k", big, "clicks", 3, 42, RecordError("bad"))
    headers = dict(letter.headers)
    assert headers["tidemark.error.class"] == b"RecordError"
    assert headers["tidemark.error.message"] == b"bad"
    assert headers["tidemark.source.partition"] == b"3"
    assert headers["tidemark.source.offset"] == b"42"
    assert headers["tidemark.truncated_from"] == str(len(big)).encode()
    assert letter.value is not None and len(letter.value) == MAX_DEAD_LETTER_BYTES


def test_a_value_nested_deeper_than_outputs_can_be_written_is_refused() -> None:
    deep = b'{"a":' * 220 + b"1" + b"}" * 220
    with pytest.raises(RecordError) as caught:
        Decoder(Source(topic="t")).decode(None, deep, 0, 0)
    assert caught.value.reason == "too_deep"
    shallow = b'{"a":' * 150 + b"1" + b"}" * 150
    assert Decoder(Source(topic="t")).decode(None, shallow, 0, 0).value["a"]
