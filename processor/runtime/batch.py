"""One partition's batch: decode, run the pipeline, put outputs and dead letters into the
open Kafka transaction. Shared by the worker and the replay.

Only a record's own fault (`RecordError`: malformed, missing field, wrong type) sends it to
dead letters; anything else is a bug and propagates, stopping the worker loudly: a restart
recovers exactly, a stream silently dead-lettered does not.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import orjson
import structlog
from confluent_kafka import Message
from prometheus_client import Counter

from tidemark.config import Topology
from tidemark.config.state import NotPrefetched
from tidemark.config.throttle import Throttle
from tidemark.features.validation import FeatureViolation, Gate
from tidemark.operators import Event, RecordError
from tidemark.operators.aggregate import Folded, Latest
from tidemark.operators.events import OnError
from tidemark.operators.pipeline import Pipeline
from tidemark.processor.kafka.tables import Tables
from tidemark.processor.kafka.transaction import Transaction
from tidemark.processor.observability import metrics
from tidemark.processor.protocol.partition import Partition, Phase
from tidemark.processor.runtime.deadletters import dead_letter
from tidemark.processor.runtime.decoding import Decoder

log = structlog.get_logger("tidemark.worker")


def by_partition(messages: list[Message], end: int | None = None) -> dict[int, list[Message]]:
    """Consumed messages as batches per partition (offsets below `end` only, if given);
    every message kept has a partition and an offset."""
    batches: dict[int, list[Message]] = defaultdict(list)
    for m in messages:
        number, offset = m.partition(), m.offset()
        if m.error() is not None or number is None or offset is None:
            log.warning("consume_error", error=str(m.error()))
            continue
        if end is None or offset < end:
            batches[number].append(m)
    return batches


class BatchProcessor:
    """Runs batches of one topology; outputs below a partition's `emit_from` are suppressed."""

    def __init__(
        self,
        topology: Topology,
        pipeline: Pipeline,
        transaction: Transaction,
        sink_partitioned: bool,
    ) -> None:
        self.topology = topology
        self.pipeline = pipeline
        self._tx = transaction
        self._decoder = Decoder(topology.source)
        self._sink_partitioned = sink_partitioned
        self._metrics = _Meters(topology.name)
        self._throttle = Throttle()
        self._tables = Tables(topology) if pipeline.tables else None
        group = topology.feature_group
        self._gate = Gate(group) if group is not None else None
        # The direct path checks the aggregate's key only: a source key elsewhere in the
        # record is checked by the general path's `decode`.
        direct = pipeline.direct
        keys_agree = direct is not None and self._decoder.key in (None, direct.key_path)
        self._direct = direct if keys_agree and self._decoder.json and not self._tables else None
        # The common case: folded and encoded in C, into the state's table.
        self._native = self._direct is not None and self._direct.encodes and self._gate is None
        # What its fold reads of a record: the decode keeps only that.
        self._fields = self._direct.fields if self._native and self._direct is not None else None

    def close(self) -> None:
        """Let go of the table reader, if joins have one."""
        if self._tables is not None:
            self._tables.close()

    async def run(self, part: Partition, batch: list[Message]) -> None:
        """Process one partition's batch; the partition fails past the failure limit."""
        started = time.perf_counter()
        failures: dict[int, RecordError] = {}

        def on_error(event: Event, exc: RecordError) -> None:
            failures[event.offset] = exc

        try:  # the direct path of a lone aggregate (docs/ARCHITECTURE.md), or the general one
            if self._direct is not None:
                keys: set[str] = set()
                records = self._decoder.folded(
                    batch, self._direct.key_path, failures, keys, self._fields
                )
                read = self._direct.unheld if self._native else self._direct.latest
                latest = await read(keys, part.states[self._direct.id])
            else:
                outputs = await self._outputs(part, batch, failures, on_error)
        except NotPrefetched:
            if part.processing:
                raise
            return  # dropped while its state was read (memory forgotten): the batch is void
        if not part.processing:
            return  # dropped meanwhile: none of this batch may be produced
        if self._direct is not None:
            emitted = self._fold(part, records, latest, failures, on_error)
        else:
            emitted = self._emit_all(part, outputs, failures)
        if emitted:
            self._metrics.outputs(part.number).inc(emitted)
        if failures:
            self._dead_letter(part, [m for m in batch if m.offset() in failures], failures)
        self._count_failures(part, batch, failures)
        part.processed(batch[-1].offset() + 1)  # type: ignore[operator]  # ints: `by_partition`
        part.records_since_snapshot += len(batch)
        self._metrics.batch_done(part, len(batch), time.perf_counter() - started)
        if dropped := self.pipeline.take_late_dropped():
            self._metrics.late_dropped(part.number, dropped)
        if duplicates := self.pipeline.take_duplicates_dropped():
            self._metrics.duplicates_dropped(part.number, duplicates)
        if skipped := self.pipeline.take_table_errors():
            log.warning("table_records_skipped", partition=part.number, records=skipped)

    async def _outputs(
        self,
        part: Partition,
        batch: list[Message],
        failures: dict[int, RecordError],
        on_error: OnError,
    ) -> list[Event]:
        events: list[Event] = []
        for m in batch:
            offset: int = m.offset()  # type: ignore[assignment]  # ints: `by_partition`
            try:
                events.append(self._decoder.decode(m.key(), m.value(), offset, m.timestamp()[1]))
            except RecordError as exc:
                failures[offset] = exc
        feeds = None
        if self._tables is not None:
            self._tables.refresh()
            feeds = self._tables.feeds(self.pipeline.tables, part.number)
        return await self.pipeline.process(events, part.states, on_error, feeds)

    def _emit_all(
        self, part: Partition, outputs: list[Event], failures: dict[int, RecordError]
    ) -> int:
        sink = self.topology.sink_topic
        gated = self._gate is not None  # once per batch: most topologies have no features
        emitted = 0
        for out in outputs:
            if gated and out.topic is None:
                violation = self._feature(part, out.key, out.value, out.offset, out.timestamp)
                if violation is not None:
                    failures.setdefault(out.offset, violation)
                    continue  # neither materialized nor produced: dead-lettered instead
            # `route` may name a topic; without one an output goes to the sink, if any.
            topic = out.topic or sink
            if topic is not None and out.offset >= part.emit_from:
                self._emit(part, out, topic)
                emitted += 1
        return emitted

    def _fold(
        self,
        part: Partition,
        records: list[Folded],
        latest: Latest,
        failures: dict[int, RecordError],
        on_error: OnError,
    ) -> int:
        """The direct path's fold, and its outputs, which all go to the sink."""
        op = self._direct
        assert op is not None
        sink, emit_from, state = self.topology.sink_topic, part.emit_from, part.states[op.id]
        if self._native:
            never = 2**63 - 1  # no sink: nothing to encode
            produced = op.fold_encoded(
                records, latest, state, on_error, emit_from if sink is not None else never
            )
        else:
            produced = []
            for key, value, offset, timestamp in op.fold_batch(records, latest, state, on_error):
                if self._gate is not None:
                    violation = self._feature(part, key, value, offset, timestamp)
                    if violation is not None:
                        failures.setdefault(offset, violation)
                        continue
                if sink is not None and offset >= emit_from:
                    produced.append((key.encode(), orjson.dumps(value), timestamp))
        if sink is None or not produced:
            return 0
        partition = part.number if self._sink_partitioned else None
        self._tx.produce_all(sink, produced, partition)
        return len(produced)

    def _feature(
        self, part: Partition, key: str | None, value: Any, offset: int, timestamp: int
    ) -> RecordError | None:
        """Buffer the output's feature row; the rule it breaks instead, if any."""
        assert self._gate is not None
        try:
            row = self._gate.row(value, key, timestamp, part.number, offset)
        except FeatureViolation as exc:
            return RecordError(str(exc), f"feature_{exc.rule}")
        part.features.add(row)
        return None

    def _emit(self, part: Partition, out: Event, topic: str) -> None:
        key = out.key.encode() if out.key is not None else None
        value = orjson.dumps(out.value)
        partition = part.number if self._sink_partitioned and out.topic is None else None
        self._tx.produce(topic, key, value, partition, timestamp=out.timestamp)

    def _dead_letter(
        self, part: Partition, failed: list[Message], errors: dict[int, RecordError]
    ) -> None:
        topic = self.topology.source.topic
        for m in failed:
            offset: int = m.offset()  # type: ignore[assignment]  # ints: `by_partition`
            if offset < part.emit_from:
                continue  # dead-lettered before the crash, in a committed transaction
            error = errors[offset]
            letter = dead_letter(m.key(), m.value(), topic, part.number, offset, error)
            self._tx.produce(
                self.topology.dead_letter_topic, letter.key, letter.value, headers=letter.headers
            )
            part.dead_letters += 1
            self._metrics.dead_letter(part.number, error.reason)
            held = self._throttle.allow("dead_letter")
            if held is not None:  # a stream of bad records is one line per window
                log.warning(
                    "dead_letter",
                    partition=part.number,
                    offset=offset,
                    error=type(error).__name__,
                    reason=str(error)[:300],
                    held_back=held,
                )

    def _count_failures(
        self, part: Partition, batch: list[Message], failures: dict[int, RecordError]
    ) -> None:
        if not failures:
            part.consecutive_failures = 0  # what each record would do: no need to go through them
        for m in batch if failures else ():
            exc = failures.get(m.offset())  # type: ignore[arg-type]  # ints: `by_partition`
            if exc is None or exc.reason == "late":  # late is not poison: the stream is fine
                part.consecutive_failures = 0
                continue
            part.consecutive_failures += 1
            part.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        if part.consecutive_failures >= self.topology.errors.max_consecutive_failures:
            # Everything up to the end of this batch is handled; the commit records the
            # failure with the checkpoint and the partition stays paused until replayed.
            part.move(Phase.FAILED)
            log.error("partition_failed", partition=part.number, error=part.last_error)


class _Meters:
    """The batch processor's metrics, label children bound once per partition: a
    `labels()` lookup per record would cost more than the count itself."""

    def __init__(self, topology: str) -> None:
        self._t = topology
        self._in: dict[int, Counter] = {}
        self._out: dict[int, Counter] = {}
        self._seconds = metrics.BATCH_SECONDS.labels(topology)
        self._hits = metrics.CACHE_HITS.labels(topology)
        self._misses = metrics.CACHE_MISSES.labels(topology)
        self._evictions = metrics.CACHE_EVICTIONS.labels(topology)

    def outputs(self, partition: int) -> Counter:
        if (child := self._out.get(partition)) is None:
            child = self._out[partition] = metrics.RECORDS_OUT.labels(self._t, str(partition))
        return child

    def late_dropped(self, partition: int, records: int) -> None:
        metrics.LATE_DROPPED.labels(self._t, str(partition)).inc(records)

    def duplicates_dropped(self, partition: int, records: int) -> None:
        metrics.DUPLICATES_DROPPED.labels(self._t, str(partition)).inc(records)

    def dead_letter(self, partition: int, reason: str) -> None:
        metrics.DEAD_LETTERS.labels(self._t, str(partition), reason).inc()

    def batch_done(self, part: Partition, records: int, seconds: float) -> None:
        if (child := self._in.get(part.number)) is None:
            child = self._in[part.number] = metrics.RECORDS_IN.labels(self._t, str(part.number))
        child.inc(records)
        self._seconds.observe(seconds)
        hits, misses, evictions = part.store.take_cache_stats()
        self._hits.inc(hits)
        self._misses.inc(misses)
        self._evictions.inc(evictions)
