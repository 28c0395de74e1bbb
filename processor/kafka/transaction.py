"""The transactional producer of a worker or a replay: one Kafka transaction always open.

Outputs, dead letters and the consumer offsets go into the open transaction; committing it
makes them visible together (step `commit_transaction` of the commit protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from tidemark.config import Topology, faults
from tidemark.config.errors import TidemarkError
from tidemark.processor.kafka import _produce, clients
from tidemark.processor.kafka.clients import base, transaction_timeout
from tidemark.processor.kafka.hanging import SEAL_HEADERS, resealed, settled_offsets
from tidemark.processor.kafka.topics import TIMESTAMP_LIMITS_MS, output_topics, timestamp_limits

log = structlog.get_logger("tidemark.kafka")
SWEEP = "transaction.abort.timed.out.transaction.cleanup.interval.ms"
SWEEP_DEFAULT_MS = 10_000  # Kafka's default
# Our clock against the broker's, and the time from produce to append.
CLOCK_MARGIN_MS = 60_000


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


# Retrying cannot help: the credentials or the ACLs are wrong. Anything else (a timeout, a
# broker gone, a producer fenced or failed fatally) is waited out with a new producer.
_REFUSED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._INVALID_ARG,
    }
)


class KafkaFailure(TidemarkError):
    """Kafka refused an operation. `retriable` unless it was refused for good (credentials,
    ACLs); `fatal` when the producer can do nothing more and must be replaced."""

    def __init__(self, what: str, error: KafkaError) -> None:
        super().__init__(f"{what}: {error.name()}: {error.str()}")
        self.code = error.code()
        self.fatal = bool(error.fatal())
        self.retriable = self.code not in _REFUSED


def failure(what: str, exc: KafkaException) -> KafkaFailure:
    """A librdkafka exception as a `KafkaFailure`."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if error is None:
        error = KafkaError(KafkaError._FAIL, str(exc))
    return KafkaFailure(what, error)


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


SEAL_ATTEMPTS = 3
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


class Transaction:
    """Owns the transactional producer; after `start()` a transaction is always open.

    Every call that waits on the broker waits at most the transaction timeout: a wait longer
    than that would outlive the transaction it belongs to. A call that fails without a
    clear abort raises `KafkaFailure`; the owner then `renew()`s the producer.
    """

    def __init__(self, topology: Topology, owner: str) -> None:
        self._topology, self._owner = topology, owner
        self._id = f"tidemark-{topology.name}-{uuid.uuid4().hex[:12]}"
        self._timeout = transaction_timeout(topology)
        self._producer = self._make()
        # Set when the last failed call said this member left the consumer group.
        self.left_group = False
        self.empty = True  # nothing produced or offered in the open transaction
        # The consumer offsets of the open transaction, and of the last acknowledged commit.
        self._offered: list[TopicPartition] = []
        self.last_offsets: list[TopicPartition] = []
        # A transaction that wrote something ended without an acknowledged commit: its
        # records may still be open (`hanging.py`) until a seal ends them.
        self._unsealed = False
        # The last consumer offsets and group offered: a seal aborts them (their partition
        # of `__consumer_offsets` may hold pending offsets of ours).
        self._group: tuple[list[TopicPartition], object] | None = None
        # Per output topic, how far before and after the clock a timestamp may lie.
        self._limits: dict[str, tuple[int, int]] | None = None

    def _make(self) -> Producer:
        return clients.producer(self._topology, self._owner, self._id)

    async def start(self) -> None:
        """Register the transactional id (fencing any older producer of it) and begin."""
        if self._limits is None:
            topics = output_topics(self._topology)
            self._limits = await asyncio.to_thread(timestamp_limits, self._topology, topics)
        await self._call("init", self._producer.init_transactions, self._timeout)
        self._begin()
        await self._seal()

    def _begin(self) -> None:
        self._producer.begin_transaction()
        self.empty, self._offered = True, []

    async def renew(self) -> None:
        """Replace the producer: the new one's `init` aborts whatever the old one left open."""
        self._unsealed |= not self.empty
        old, self._producer = self._producer, self._make()
        old.purge()  # its records belong to a transaction that can never commit
        self.left_group = False
        await self.start()

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
    ) -> None:
        """Produce into the open transaction, waiting for room when the queue is full;
        `timestamp` in epoch ms (0, or one the topic would refuse: the producer's clock)."""
        self.empty = False
        if timestamp:
            low, high = self._accepted(topic)
            timestamp = timestamp if low <= timestamp <= high else 0
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=-1 if partition is None else partition,  # -1: the partitioner's
                    headers=headers,  # type: ignore[arg-type]
                    timestamp=timestamp,
                )
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise failure("Kafka produce", exc) from exc

    def produce_all(
        self, topic: str, records: list[tuple[bytes, bytes, int]], partition: int | None
    ) -> None:
        """`produce` of each (key, value, timestamp) to one topic, in one call: the direct
        path's outputs."""
        self.empty = False
        where, done = -1 if partition is None else partition, 0
        low, high = self._accepted(topic)
        while True:
            try:  # the loop in C (`_produce.c`): it runs for every output
                rest = records[done:] if done else records
                done += _produce.produce(self._producer.produce, topic, rest, where, low, high)
            except KafkaException as exc:
                raise failure("Kafka produce", exc) from exc
            if done == len(records):
                return
            self._producer.poll(0.1)  # the queue is full: wait for room, then go on

    def _accepted(self, topic: str) -> tuple[int, int]:
        """The timestamps `topic` accepts now, with a margin: an event time outside (a
        record from year 9999, say) would fail the whole transaction, again on every
        retry, so its output is stamped with the producer's clock instead."""
        before, after = (self._limits or {}).get(topic, TIMESTAMP_LIMITS_MS)
        now = time.time_ns() // 1_000_000
        return now - before + CLOCK_MARGIN_MS, now + after - CLOCK_MARGIN_MS

    async def send_offsets(self, offsets: list[TopicPartition], group_metadata: object) -> bool:
        """Add consumer offsets to the transaction; False if it must be aborted."""
        send = self._producer.send_offsets_to_transaction
        self.empty, self._offered, self._group = False, offsets, (offsets, group_metadata)
        return await self._abortable("send offsets", send, offsets, group_metadata, self._timeout)

    async def commit(self) -> bool:
        """Commit the transaction and begin the next; False if it must be aborted instead."""
        commit = self._producer.commit_transaction
        try:
            if not await self._abortable("commit", commit, self._timeout):
                return False
        except KafkaFailure:
            # The broker may or may not have taken it: nothing after this relies on it, and
            # the seal that follows the abort or renewal ends whatever it left open.
            self._unsealed = True
            raise
        if self._offered:
            self.last_offsets = self._offered
        self._begin()
        return True

    async def reseal(self, settled: dict[int, int], group_metadata: object) -> bool:
        """Commit the offsets of the last commit again, none below `settled` (see
        `hanging.py`), in a transaction of their own; False if there is nothing to reseal."""
        if not self.last_offsets or not self.empty:
            return False
        offsets = resealed(self.last_offsets, settled)
        log.warning("kafka_commit_resealed", offsets={tp.partition: tp.offset for tp in offsets})
        if not await self.send_offsets(offsets, group_metadata) or not await self.commit():
            raise KafkaFailure("Kafka transaction: reseal", KafkaError(KafkaError._FAIL))
        return True

    async def abort(self) -> None:
        """Abort the open transaction and begin the next one, sealed (`hanging.py`)."""
        self._unsealed |= not self.empty
        await self._call("abort", self._producer.abort_transaction, self._timeout)
        self._begin()
        self.left_group = False  # read by the caller before the abort; a new transaction
        await self._seal()

    async def _seal(self) -> None:
        """If an ended transaction may have left records open, abort them: write abort
        markers of our producer id to every output partition and to the offsets partition
        of the group, in a transaction of their own. Raises `KafkaFailure` if the seal was
        not delivered (the broker is away): the owner's next abort or renewal seals again."""
        if not self._unsealed:
            return
        if await asyncio.to_thread(self._last_commit_pending):
            # Its markers went missing too: an abort marker would undo an acknowledged
            # commit. The reseal commits it, and its open records with it (`hanging.py`).
            log.warning("kafka_seal_skipped", reason="the last commit is not settled")
            self._unsealed = False
            return
        faults.point("seal")
        for attempt in range(1, SEAL_ATTEMPTS + 1):
            self.empty = False
            try:
                sealed = await asyncio.to_thread(self._write_seal)
                break
            except KafkaFailure as exc:
                if exc.code not in _PURGED or attempt == SEAL_ATTEMPTS:
                    raise
            except Exception as exc:  # a fatal error met inside `flush` surfaces as any
                raise KafkaFailure(
                    "Kafka transaction: seal", KafkaError(KafkaError._FAIL, str(exc))
                ) from exc
            # After a refused record the producer bumps its epoch and purges its queues as
            # it goes, which can take the seal's records too: abort, and seal again.
            await self._call("abort", self._producer.abort_transaction, self._timeout)
            self._begin()
        await self._call("abort", self._producer.abort_transaction, self._timeout)
        self._begin()
        self._unsealed = False
        log.info("kafka_transaction_sealed", partitions=sealed)

    def _write_seal(self) -> int:
        """One seal record to every output partition and the last offsets offered to the
        group, all delivered (blocking); the number of partitions sealed."""
        topics = self._producer.list_topics(None, self._timeout).topics
        failed: list[KafkaError] = []

        def delivered(error: KafkaError | None, _msg: object) -> None:
            if error is not None:
                failed.append(error)

        sealed = 0
        for topic in output_topics(self._topology):
            for partition in topics[topic].partitions if topic in topics else ():
                self._producer.produce(
                    topic, None, b"", partition, on_delivery=delivered, headers=SEAL_HEADERS
                )
                sealed += 1
        if self._producer.flush(self._timeout) or failed:
            error = failed[0] if failed else KafkaError(KafkaError._TIMED_OUT, "undelivered")
            raise KafkaFailure("Kafka transaction: seal", error)
        if self._group is not None:
            offsets, group = self._group
            # Refused or not (a stale member is), the offsets partition joins the
            # transaction; after the records are delivered, since a refusal fails the
            # transaction and librdkafka then fences what is still in flight.
            with contextlib.suppress(KafkaException):
                self._producer.send_offsets_to_transaction(offsets, group, self._timeout)
        return sealed

    def _last_commit_pending(self) -> bool:
        """Whether the group has not settled the offsets of the last acknowledged commit."""
        if not self.last_offsets:
            return False
        try:
            settled = settled_offsets(self._topology, self.last_offsets)
        except Exception as exc:  # an unreachable broker, in any shape
            raise KafkaFailure(
                "Kafka committed offsets", KafkaError(KafkaError._TRANSPORT, str(exc))
            ) from exc
        return any(settled.get(tp.partition, -1) < tp.offset for tp in self.last_offsets)

    async def _abortable(self, what: str, call: object, *args: object) -> bool:
        self.left_group = False
        try:
            await asyncio.to_thread(call, *args)  # type: ignore[arg-type]
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if not error.txn_requires_abort():
                raise failure(f"Kafka transaction: {what}", exc) from exc
            self.left_group = error.code() in _LEFT_GROUP
            log.warning("kafka_transaction_aborted", step=what, error=error.name())
            return False
        return True

    @staticmethod
    async def _call(what: str, call: object, *args: object) -> None:
        try:
            await asyncio.to_thread(call, *args)  # type: ignore[arg-type]
        except KafkaException as exc:
            raise failure(f"Kafka transaction: {what}", exc) from exc
