"""`tidemark demo`: sample clicks in, one worker until caught up, the aggregates out."""

from __future__ import annotations

import asyncio
import random
import time

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pymongo import AsyncMongoClient

from tidemark.config import Topology, secrets
from tidemark.processor.runtime.worker import Worker
from tidemark.state import Checkpoints
from tidemark.state.names import CHECKPOINTS, state_collection

PARTITIONS = 4
USERS = [f"user-{i:02d}" for i in range(20)]


def _create_topics(topology: Topology) -> None:
    admin = AdminClient({"bootstrap.servers": topology.kafka.bootstrap_servers})
    names = [topology.source.topic] + ([topology.sink.topic] if topology.sink else [])
    existing = admin.list_topics(timeout=15).topics
    new = [NewTopic(n, PARTITIONS, 1) for n in names if n not in existing]
    for future in admin.create_topics(new).values() if new else []:
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def _produce(topology: Topology, events: int) -> dict[int, int]:
    producer = Producer({"bootstrap.servers": topology.kafka.bootstrap_servers, "linger.ms": 20})
    rng = random.Random()
    for _ in range(events):
        user = rng.choice(USERS)
        click = {"user_id": user, "amount": round(rng.uniform(-5, 50), 2), "page": rng.randrange(9)}
        producer.produce(topology.source.topic, orjson.dumps(click), user.encode())
        producer.poll(0)
    producer.flush(30)
    reader = Consumer({"bootstrap.servers": topology.kafka.bootstrap_servers, "group.id": "demo"})
    ends = {
        p: reader.get_watermark_offsets(TopicPartition(topology.source.topic, p), timeout=10)[1]
        for p in range(PARTITIONS)
    }
    reader.close()
    return ends


async def run_demo(topology: Topology, events: int) -> int:
    """Produce `events` clicks, process them, print the per-key aggregates."""
    await asyncio.to_thread(_create_topics, topology)
    ends = await asyncio.to_thread(_produce, topology, events)
    print(f"produced {events} events to {topology.source.topic!r}; processing...")
    worker = Worker(topology)
    task = asyncio.create_task(worker.run())
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        topology.mongo.uri, **topology.mongo.client_args()
    )
    db = mongo[topology.mongo.database]
    checkpoints = Checkpoints(db, topology.name)
    started = time.monotonic()
    try:
        while not task.done():
            offsets = [await checkpoints.get(topology.source.topic, p) for p in ends]
            if all(c and c.offset is not None and c.offset >= ends[c.partition] for c in offsets):
                break
            await asyncio.sleep(0.5)
        worker.stop()
        await task
        elapsed = time.monotonic() - started
        print(f"caught up in {elapsed:.1f}s\n\n{'key':<12}{'count':>8}{'total':>12}")
        async for doc in db[state_collection(topology.name)].find({}).sort("k", 1):
            value = doc["v"]
            assert isinstance(value, dict)
            print(f"{doc['k']!s:<12}{value.get('count', ''):>8}{value.get('total', 0):>12.2f}")
        uri = secrets.scrub(topology.mongo.uri)
        print(
            f"\nstate:       {uri} database {topology.mongo.database!r},"
            f" collection {state_collection(topology.name)!r}"
            f"\ncheckpoints: same database, collection {CHECKPOINTS!r}"
            f"\noutputs:     Kafka topic {topology.sink.topic if topology.sink else '-'!r}"
            f"\ndead letters: Kafka topic {topology.dead_letter_topic!r}"
        )
    finally:
        await mongo.close()
    return 0
