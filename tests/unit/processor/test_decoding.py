"""Decoding and dead-letter wrapping of raw records."""

from __future__ import annotations

import pytest

from config.model import Source
from operators import RecordError
from processor.deadletters import MAX_DEAD_LETTER_BYTES, dead_letter
from processor.decoding import Decoder
from processor.faults import _parse


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


def test_fault_specs() -> None:
    rules = _parse("after_kafka_commit:n=3, after_checkpoint:p=0.5,after_state_flush")
    assert rules["after_kafka_commit"].count == 3
    assert rules["after_checkpoint"].probability == 0.5
    assert rules["after_state_flush"].count == 1
    with pytest.raises(ValueError, match="unknown point"):
        _parse("before_lunch")
