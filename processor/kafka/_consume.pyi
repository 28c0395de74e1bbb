"""A consumed batch split by partition, in C (`_consume.c`)."""

from confluent_kafka import Message

def split(
    messages: list[Message], end: int | None
) -> tuple[dict[int, list[Message]], list[Message]]: ...
