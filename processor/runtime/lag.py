"""Consumer lag per partition, as a gauge: the log end librdkafka last saw minus C."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from tidemark.processor.observability import metrics
from tidemark.processor.protocol.partition import Partition


class LagGauges:
    """The lag series of the partitions a worker owns, and only those."""

    def __init__(self, topology: str, topic: str) -> None:
        self._topology, self._topic = topology, topic

    def report(self, consumer: Consumer, parts: Iterable[Partition]) -> None:
        """After a commit: cached watermarks only, no request to the broker."""
        for part in parts:
            committed = part.kafka_offset()
            if committed is None:
                continue
            with contextlib.suppress(KafkaException):
                tp = TopicPartition(self._topic, part.number)
                _, end = consumer.get_watermark_offsets(tp, cached=True)
                if end >= 0:
                    gauge = metrics.CONSUMER_LAG.labels(self._topology, str(part.number))
                    gauge.set(max(0, end - committed))

    def forget(self, numbers: Iterable[int]) -> None:
        """Partitions let go of: their new owner reports their lag."""
        for number in numbers:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self._topology, str(number))
