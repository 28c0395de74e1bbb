"""Dead letters: the raw record and why it failed, as headers a person can read."""

from __future__ import annotations

from dataclasses import dataclass

from tidemark.config import secrets

# Keep dead letters under the broker's default message size even for oversized inputs.
MAX_DEAD_LETTER_BYTES = 512 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """One failed record, ready to produce."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    error: Exception,
) -> DeadLetter:
    """Wrap a failed record with its error class, message and source coordinates."""
    headers = [
        ("tidemark.error.class", type(error).__name__.encode()),
        ("tidemark.error.message", secrets.scrub(str(error))[:2000].encode()),
        ("tidemark.error.reason", str(getattr(error, "reason", "invalid")).encode()),
        ("tidemark.source.topic", topic.encode()),
        ("tidemark.source.partition", str(partition).encode()),
        ("tidemark.source.offset", str(offset).encode()),
        ("tidemark.attempts", b"1"),
    ]
    if value is not None and len(value) > MAX_DEAD_LETTER_BYTES:
        headers.append(("tidemark.truncated_from", str(len(value)).encode()))
        value = value[:MAX_DEAD_LETTER_BYTES]
    return DeadLetter(key, value, headers)
