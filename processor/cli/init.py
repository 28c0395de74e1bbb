"""`tidemark init`: create what a topology needs before its first worker starts.

Idempotent, for a one-shot init container or Job: missing Kafka topics (source, sink,
route topics, dead letters, tables, these compacted) are created with the source's partition
count; existing ones are left as they are. Then the MongoDB collections and indexes the
workers would create at start.
"""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pymongo import AsyncMongoClient

from tidemark.config import Topology, secrets
from tidemark.processor.kafka.clients import base
from tidemark.processor.kafka.topics import partition_counts, route_topics
from tidemark.state import ensure_collections

EXIT_FAILED = 1


async def initialize(topology: Topology, partitions: int | None, replication: int) -> int:
    """Create what is missing; print one line per thing; the exit code."""
    t = topology
    names = [t.source.topic, t.dead_letter_topic, *([t.sink_topic] if t.sink_topic else [])]
    names += [r for r in route_topics(t) if r not in names]
    tables = [table.topic for table in t.tables.values()]
    names += [n for n in tables if n not in names]
    try:
        counts = await asyncio.to_thread(partition_counts, t, names)
        missing = [n for n in names if n not in counts]
        count = partitions or counts.get(t.source.topic)
        if missing and count is None:
            print("tidemark init: the source topic is missing: give --partitions")
            return EXIT_FAILED
        for name in names:
            print(f"topic {name}: {'exists' if name in counts else f'created, {count} partitions'}")
        if missing and count is not None:
            await asyncio.to_thread(_create, t, missing, count, replication, tables)
    except KafkaException as exc:
        print(f"tidemark init: {secrets.scrub(str(exc))}")
        return EXIT_FAILED
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        t.mongo.uri, **t.mongo.client_args()
    )
    try:
        await ensure_collections(client[t.mongo.database], t.name)
    finally:
        await client.close()
    print(f"mongodb {t.mongo.database}: collections and indexes of {t.name} ready")
    return 0


def _create(
    topology: Topology, names: list[str], partitions: int, replication: int, tables: list[str]
) -> None:
    admin = AdminClient(base(topology))
    # A table keeps its latest row per key: compaction bounds it by the number of keys.
    compacted = {"cleanup.policy": "compact"}
    futures = admin.create_topics(
        [
            NewTopic(n, partitions, replication, config=compacted if n in tables else {})
            for n in names
        ]
    )
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another init won the race
                raise
