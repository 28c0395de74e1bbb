"""Reading the table topics of a topology's joins, one feed per (table, source partition).

One consumer outside the group reads every table partition this process needs, assigned
when a join first asks for it, at the position the join's state holds (`operators/join.py`).
It reads only committed records. A table partition is at its end when the consumer says so
(partition EOF); what arrived since is picked up at the next batch (`refresh`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from tidemark.config import Topology
from tidemark.config.errors import TidemarkError
from tidemark.operators.join import TableRecord
from tidemark.processor.kafka.clients import base

BUFFER = 20_000  # records held per table partition before reading it pauses
FETCH_TIMEOUT = 30.0  # seconds without a record or an end before the broker counts as away


class TableUnavailable(TidemarkError):
    """A table partition could not be read: the worker waits the outage out."""

    retriable = True


class Tables:
    """The feeds of one process, over one consumer."""

    def __init__(self, topology: Topology) -> None:
        self._topics = {name: t.topic for name, t in topology.tables.items()}
        self._consumer: Consumer | None = None
        self._topology = topology
        self._feeds: dict[tuple[str, int], Feed] = {}  # (topic, partition)

    def feeds(self, names: list[str], partition: int) -> dict[str, Feed]:
        """The feeds of these tables for one source partition, by table name."""
        return {name: self._feed(self._topics[name], partition) for name in names}

    def refresh(self) -> None:
        """Take what arrived since the last batch, without waiting."""
        if self._consumer is not None:
            self._take(self._consumer.consume(BUFFER, 0))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _feed(self, topic: str, partition: int) -> Feed:
        feed = self._feeds.get((topic, partition))
        if feed is None:
            feed = self._feeds[topic, partition] = Feed(self, topic, partition)
        return feed

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **base(self._topology),
                    "group.id": f"{self._topology.name}.tables",  # never joined, never committed
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 50,
                    **self._topology.kafka.consumer,
                }
            )
        return self._consumer

    async def fetch(self) -> None:
        """Read what the assigned table partitions have, waiting briefly for it."""
        self._take(await asyncio.to_thread(self.consumer.consume, 2_000, 0.2))

    def _take(self, messages: list[Message]) -> None:
        for m in messages:
            feed = self._feeds.get((m.topic() or "", m.partition() or 0))
            if feed is None:
                continue
            error = m.error()
            if error is None:
                feed.add(_record(m))
            elif error.code() == KafkaError._PARTITION_EOF:
                feed.at_end = True
            elif error.fatal() or not error.retriable():
                raise TableUnavailable(f"reading table {m.topic()!r}: {error.str()}")


class Feed:
    """One table partition (`TableFeed`): the records read ahead, from `start` on."""

    def __init__(self, tables: Tables, topic: str, partition: int) -> None:
        self._tables = tables
        self._tp = TopicPartition(topic, partition)
        self._buffer: deque[TableRecord] = deque()
        self._start: int | None = None  # the buffer holds every record from here on
        self._next = 0  # one past the last record read
        self._paused = False
        self.at_end = False

    def add(self, record: TableRecord) -> None:
        if record.offset < self._next:
            return  # read before a seek back: its turn comes again
        self._buffer.append(record)
        self._next = record.offset + 1
        self.at_end = False
        if len(self._buffer) >= BUFFER and not self._paused:
            self._tables.consumer.pause([self._tp])
            self._paused = True

    async def head(self, position: int) -> TableRecord | None:
        if self._start is None or not self._start <= position <= self._next:
            self._seek(position)
        while self._buffer and self._buffer[0].offset < position:
            self._buffer.popleft()
        self._start = position
        if self._paused and len(self._buffer) < BUFFER // 2:
            self._tables.consumer.resume([self._tp])
            self._paused = False
        deadline = time.monotonic() + FETCH_TIMEOUT
        while not self._buffer and not self.at_end:
            if time.monotonic() > deadline:
                where = f"{self._tp.topic}/{self._tp.partition}"
                raise TableUnavailable(f"table partition {where}: no answer in {FETCH_TIMEOUT} s")
            await self._tables.fetch()
        return self._buffer[0] if self._buffer else None

    def _seek(self, position: int) -> None:
        consumer = self._tables.consumer
        tp = TopicPartition(self._tp.topic, self._tp.partition, position or OFFSET_BEGINNING)
        if self._start is None:
            consumer.incremental_assign([tp])
        else:
            consumer.seek(tp)
            if self._paused:
                consumer.resume([self._tp])
                self._paused = False
        self._buffer.clear()
        self._start = self._next = position
        self.at_end = False


def _record(m: Message) -> TableRecord:
    raw_key, value, offset = m.key(), m.value(), m.offset() or 0
    key = raw_key.decode("utf-8", "replace") if raw_key else None
    timestamp = m.timestamp()[1]
    if value is None:
        return TableRecord(offset, key, None, timestamp)
    try:
        row: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return TableRecord(offset, key, None, timestamp, f"malformed JSON: {exc}")
    if not isinstance(row, dict):
        return TableRecord(offset, key, None, timestamp, f"not a JSON object: {type(row).__name__}")
    return TableRecord(offset, key, row, timestamp)
