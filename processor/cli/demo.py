"""`tidemark demo FILE`: sample events in, one worker until caught up, what came out printed.

Any topology runs: its topics are created if missing (`tidemark init`), the samples come
from `samples.py`, and the outputs are read back from every topic the pipeline writes to
(the sink, route topics, dead letters), from where they ended before the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pymongo import AsyncMongoClient

from tidemark.config import Topology, secrets
from tidemark.config.features import FeatureGroup
from tidemark.features.client import AsyncFeatureClient
from tidemark.features.materialize import current_collection
from tidemark.processor.cli import samples
from tidemark.processor.cli.init import initialize
from tidemark.processor.kafka.clients import base
from tidemark.processor.kafka.topics import partition_counts, route_topics
from tidemark.processor.runtime.worker import Worker
from tidemark.state import Checkpoints
from tidemark.state.names import CHECKPOINTS, state_collection

PARTITIONS = 4  # for the topics the demo creates
ROWS = 15  # printed per output topic
WINDOW_FIELDS = ("window_start", "window_end", "window_start_iso", "window_end_iso")
Offsets = dict[str, dict[int, int]]  # topic: partition: offset


async def run_demo(topology: Topology, events: int) -> int:
    """Produce `events` sample events, process them, print the outputs per topic."""
    t = topology
    counts = await asyncio.to_thread(partition_counts, t, [t.source.topic])
    code = await initialize(t, counts.get(t.source.topic, PARTITIONS), -1)
    if code:
        return code
    outputs = _output_topics(t)
    before = await asyncio.to_thread(_ends, t, [*outputs, t.dead_letter_topic])
    now = int(time.time() * 1000)
    for name, rows in samples.sample_tables(t, events, now).items():
        await asyncio.to_thread(_produce, t, t.tables[name].topic, rows)
        print(f"produced {len(rows)} rows to table {name!r} ({t.tables[name].topic!r})")
    records = samples.sample_records(t, events, now)
    await asyncio.to_thread(_produce, t, t.source.topic, records)
    ends = (await asyncio.to_thread(_ends, t, [t.source.topic]))[t.source.topic]
    print(f"\nproduced {len(records)} events to {t.source.topic!r} ({samples.describe(t)})")
    print(f"  for example: {json.dumps(records[0][1]) if records else '-'}\nprocessing...")
    started = time.monotonic()
    await _run_until_caught_up(t, ends)
    print(f"caught up in {time.monotonic() - started:.1f}s")

    found = await asyncio.to_thread(_read_since, t, before)
    for topic in outputs:
        _print_outputs(t, topic, found.get(topic, []))
    _print_dead_letters(t, found.get(t.dead_letter_topic, []))
    if t.feature_group is not None:
        await _print_features(t, t.feature_group)
    if any(s.window is not None for s in t.aggregates()):
        print(
            "\nwindows still open are emitted once stream time (the largest event time seen"
            " per partition) passes their end plus grace"
        )
    print(
        f"\nstate:        {secrets.scrub(t.mongo.uri)} database {t.mongo.database!r},"
        f" collection {state_collection(t.name)!r}"
        f"\ncheckpoints:  same database, collection {CHECKPOINTS!r}"
    )
    return 0


async def _print_features(topology: Topology, group: FeatureGroup) -> None:
    """A few entities' features as `FeatureClient` serves them."""
    t = topology
    client = AsyncFeatureClient(t.mongo.uri, t.mongo.database, **t.mongo.client_args())
    try:
        coll = client.database[current_collection(group.group)]
        docs = await coll.find({"ver": group.version}, {"e": 1}).limit(ROWS).to_list(None)
        entities = [d["e"] for d in docs]
        vectors = await client.get(group.group, entities, version=group.version) if docs else []
    finally:
        await client.close()
    print(f"\nfeature group {group.group!r} v{group.version} ({len(vectors)} entities shown):")
    for v in vectors:
        age = f"{v.staleness:.1f}s old" if v.staleness is not None else "-"
        print(f"  {v.entity}: {json.dumps(v.values)}  ({v.status}, {age})")
    print("serve them over HTTP: tidemark serve FILE --port 8000")


def _output_topics(topology: Topology) -> list[str]:
    sink = [topology.sink_topic] if topology.sink_topic else []
    return list(dict.fromkeys([*sink, *route_topics(topology)]))


def _ends(topology: Topology, topics: list[str]) -> Offsets:
    """The end offset of every partition of `topics`."""
    counts = partition_counts(topology, topics)
    reader = Consumer({**base(topology), "group.id": "tidemark-demo"})
    try:
        return {t: {p: _end(reader, t, p) for p in range(counts.get(t, 0))} for t in topics}
    finally:
        reader.close()


_NEW = {  # what a topic created a moment ago may answer
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
}


def _end(reader: Consumer, topic: str, partition: int) -> int:
    """A partition's end offset; a topic just created may take a moment to have a leader."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return int(reader.get_watermark_offsets(TopicPartition(topic, partition), 10)[1])
        except KafkaException as exc:
            error = exc.args[0]
            if time.monotonic() > deadline or not (error.retriable() or error.code() in _NEW):
                raise
            time.sleep(0.2)


def _produce(
    topology: Topology, topic: str, records: Sequence[samples.Record | samples.Row]
) -> None:
    producer = Producer({**base(topology), "linger.ms": 20})
    for key, value in records:
        body = orjson.dumps(value) if value is not None else None
        producer.produce(topic, body, key.encode() if key is not None else None)
        producer.poll(0)
    if producer.flush(30):
        raise RuntimeError("sample events not delivered within 30 s")


async def _run_until_caught_up(topology: Topology, ends: dict[int, int]) -> None:
    """Run a worker until its checkpoint reached `ends` in every partition, then stop it."""
    worker = Worker(topology)
    task = asyncio.create_task(worker.run())
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        topology.mongo.uri, **topology.mongo.client_args()
    )
    checkpoints = Checkpoints(mongo[topology.mongo.database], topology.name)
    try:
        while not task.done():
            at = [await checkpoints.get(topology.source.topic, p) for p in ends]
            if all(c and c.offset is not None and c.offset >= ends[c.partition] for c in at):
                break
            await asyncio.sleep(0.5)
    finally:
        worker.stop()
        await mongo.close()
    await task


def _read_since(
    topology: Topology, starts: Offsets, timeout: float = 30
) -> dict[str, list[Message]]:
    """The committed records of each topic after `starts`, up to the end."""
    reader = Consumer(
        {
            **base(topology),
            "group.id": "tidemark-demo",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    ends = _ends(topology, list(starts))
    pending = {(n, p) for n, parts in starts.items() for p, at in parts.items() if ends[n][p] > at}
    found: dict[str, list[Message]] = {n: [] for n in starts}
    try:
        if pending:
            reader.assign([TopicPartition(n, p, starts[n][p]) for n, p in pending])
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is None:
                continue
            topic, partition = str(msg.topic()), int(msg.partition() or 0)
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((topic, partition))
                continue
            found[topic].append(msg)
            if int(msg.offset() or 0) + 1 >= ends[topic][partition]:
                pending.discard((topic, partition))
    finally:
        reader.close()
    return found


def _print_outputs(topology: Topology, topic: str, messages: list[Message]) -> None:
    """What `topic` got, as a table: closed windows, the latest update per key (and window)
    of an aggregate, or the records as they came."""
    last = topology.aggregates()[-1] if topology.aggregates() else None
    if last is not None and last.window is not None and last.emits_on_close:
        what = f"{len(messages)} closed {last.window.type} windows"
    elif last is not None:
        what = f"{len(messages)} updates; the latest per key" + (
            " and window" if last.window else ""
        )
    else:
        what = f"{len(messages)} records"
    print(f"\ntopic {topic!r}: {what}")
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for i, msg in enumerate(messages):
        key = (msg.key() or b"").decode(errors="replace")
        value = orjson.loads(msg.value() or b"null")
        value = value if isinstance(value, dict) else {"value": value}
        # An aggregate's update replaces the one before it for its key and window.
        ident = int(value.get("window_start") or 0) if last is not None else i
        rows[(key, ident)] = value
    ordered = sorted(rows.items()) if last is not None else list(rows.items())
    _print_table([(key, value) for (key, _), value in ordered])


def _print_table(rows: list[tuple[str, dict[str, Any]]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(c for _, v in rows for c in v if c not in WINDOW_FIELDS))
    windowed = any("window_start_iso" in v for _, v in rows)
    header = ["key", *(["window (UTC)"] if windowed else []), *columns]
    table = [
        [key, *([_window(v)] if windowed else []), *(_cell(v.get(c)) for c in columns)]
        for key, v in rows[:ROWS]
    ]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if len(rows) > ROWS:
        print(f"  ... and {len(rows) - ROWS} more")


def _window(value: dict[str, Any]) -> str:
    start, end = str(value.get("window_start_iso", "")), str(value.get("window_end_iso", ""))
    return f"{start[:10]} {start[11:19]}-{end[11:19]}"


def _cell(value: Any, width: int = 40) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.2f}"
    elif isinstance(value, str):
        text = value
    else:
        text = orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 3] + "..."


def _reason(letter: Message) -> str:
    reason = dict(letter.headers() or []).get("tidemark.error.reason", b"?")
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def _print_dead_letters(topology: Topology, letters: list[Message]) -> None:
    reasons = Counter(_reason(m) for m in letters)
    summary = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common())
    print(
        f"\ndead letters: {len(letters)}{f' ({summary})' if summary else ''}"
        f" in topic {topology.dead_letter_topic!r}"
    )
