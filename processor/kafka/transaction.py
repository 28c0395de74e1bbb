"""The transactional producer of a worker or a replay: one Kafka transaction always open.

Outputs, dead letters and the consumer offsets go into the open transaction; committing it
makes them visible together (step `commit_transaction` of the commit protocol).
"""

from __future__ import annotations

import asyncio

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from tidemark.config import Topology
from tidemark.config.errors import TidemarkError
from tidemark.processor.kafka.clients import base, transaction_timeout

log = structlog.get_logger("tidemark.kafka")
TIMEOUT = 60.0
SWEEP = "transaction.abort.timed.out.transaction.cleanup.interval.ms"
SWEEP_DEFAULT_MS = 10_000  # Kafka's default


def abandoned_after(topology: Topology) -> float:
    """Seconds after its start by which the broker has surely ended a transaction whose
    producer went silent: `transaction.timeout.ms` plus the broker's sweep interval (the
    coordinator aborts expired transactions only when its sweep runs). Blocking."""
    found: list[int] = []
    admin = AdminClient(base(topology))
    try:
        brokers = admin.list_topics(timeout=15).brokers
        resources = [ConfigResource(ResourceType.BROKER, str(b)) for b in brokers]
        for future in admin.describe_configs(resources).values():
            entry = future.result(timeout=15).get(SWEEP)
            if entry is not None and entry.value is not None:
                found.append(int(entry.value))
    except Exception as exc:  # noqa: BLE001 - unreadable for any reason: assume the default
        log.warning("broker_config_unreadable", setting=SWEEP, error=str(exc))
    sweep_ms = max(found) if found else SWEEP_DEFAULT_MS  # the slowest broker bounds it
    return transaction_timeout(topology) + sweep_ms / 1000


class KafkaFailure(TidemarkError):
    """Kafka refused an operation; `retriable` as librdkafka says."""

    def __init__(self, what: str, error: KafkaError) -> None:
        super().__init__(f"{what}: {error}")
        self.retriable = bool(error.retriable())


# The group moved on without us (a session expired while we were frozen, say): the
# offsets of this generation are refused, and the partitions are someone else's by now.
_LEFT_GROUP = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
    }
)


class Transaction:
    """Owns the transactional producer; after `start()` a transaction is always open."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        # Set when the last failed call said this member left the consumer group.
        self.left_group = False

    async def start(self) -> None:
        await asyncio.to_thread(self._producer.init_transactions, TIMEOUT)
        self._producer.begin_transaction()

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Produce into the open transaction, waiting for room when the queue is full."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=-1 if partition is None else partition,  # -1: the partitioner's
                    headers=headers,  # type: ignore[arg-type]
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    async def send_offsets(self, offsets: list[TopicPartition], group_metadata: object) -> bool:
        """Add consumer offsets to the transaction; False if it must be aborted."""
        send = self._producer.send_offsets_to_transaction
        return await self._call("send offsets", send, offsets, group_metadata, TIMEOUT)

    async def commit(self) -> bool:
        """Commit the transaction and begin the next; False if it must be aborted instead."""
        if not await self._call("commit", self._producer.commit_transaction, TIMEOUT):
            return False
        self._producer.begin_transaction()
        return True

    async def abort(self) -> None:
        """Abort the open transaction and begin the next one."""
        await asyncio.to_thread(self._producer.abort_transaction, TIMEOUT)
        self._producer.begin_transaction()
        self.left_group = False  # read by the caller before the abort; a new transaction

    async def _call(self, what: str, call: object, *args: object) -> bool:
        self.left_group = False
        try:
            await asyncio.to_thread(call, *args)  # type: ignore[arg-type]
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if not error.txn_requires_abort():
                raise KafkaFailure(f"Kafka transaction: {what}", error) from exc
            self.left_group = error.code() in _LEFT_GROUP
            log.warning("kafka_transaction_aborted", step=what, error=str(error))
            return False
        return True
