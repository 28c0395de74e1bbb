"""Fixtures for the real services: Kafka and a MongoDB-protocol server.

Where they come from, in order: `KAFKA_BOOTSTRAP_SERVERS` / `MONGO_URI` when set; testcontainers
when `TIDEMARK_TESTCONTAINERS=1` and a Docker engine answers; otherwise the devstack, started
on demand. Every test gets its own topic names and its own database, removed afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from tests.private_stack import LatencyProxy, PrivateKafka, PrivateMongo, SlowStack, free_port
from tests.support import Services, Topics

ROOT = Path(__file__).resolve().parent.parent


def _from_testcontainers(stack: ExitStack) -> Services | None:
    if os.environ.get("TIDEMARK_TESTCONTAINERS") != "1":
        return None
    import docker  # type: ignore[import-untyped]
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]
    from testcontainers.mongodb import MongoDbContainer  # type: ignore[import-untyped]

    try:
        docker.from_env().ping()
    except Exception:  # noqa: BLE001 - no engine: fall back to the devstack
        return None
    kafka = stack.enter_context(KafkaContainer().with_kraft())
    mongo = stack.enter_context(MongoDbContainer("mongo:7"))
    return Services(kafka.get_bootstrap_server(), mongo.get_connection_url())


def _from_devstack() -> Services:
    subprocess.run(["make", "-s", "services"], cwd=ROOT, check=True)
    env = dict(
        line.split("=", 1) for line in (ROOT / ".devstack/env").read_text().splitlines() if line
    )
    return Services(env["KAFKA_BOOTSTRAP_SERVERS"], env["MONGO_URI"])


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The Kafka bootstrap address and MongoDB URI for this test session."""
    kafka, mongo = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("MONGO_URI")
    with ExitStack() as stack:
        if kafka and mongo:
            yield Services(kafka, mongo)
        else:
            yield _from_testcontainers(stack) or _from_devstack()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Make names unique to this test: `unique_name("clicks")` -> `clicks-test_x-1a2b3c`."""
    test = re.sub(r"[^a-zA-Z0-9]+", "_", request.node.name)[:40]
    run = uuid.uuid4().hex[:6]
    return lambda base: f"{base}-{test}-{run}"


@pytest.fixture
def admin(services: Services) -> AdminClient:
    """A Kafka admin client."""
    return AdminClient({"bootstrap.servers": services.kafka})


@pytest.fixture
def make_topic(admin: AdminClient, unique_name: Callable[[str], str]) -> Iterator[Topics]:
    """Create topics unique to this test (`make_topic("in", partitions=4)`); deleted after."""
    topics = Topics(admin, unique_name)
    yield topics
    topics.delete_all()


@pytest.fixture
def sync_db(services: Services, unique_name: Callable[[str], str]) -> Iterator[Database[Any]]:
    """A synchronous handle on a database unique to this test, dropped afterwards."""
    client: MongoClient[Any] = MongoClient(services.mongo_uri, serverSelectionTimeoutMS=10_000)
    name = unique_name("t").replace("-", "_")[:60]
    yield client[name]
    client.drop_database(name)
    client.close()


@pytest.fixture
async def mongo_client(services: Services) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    """An `AsyncMongoClient` bound to this test's event loop."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        services.mongo_uri, serverSelectionTimeoutMS=10_000
    )
    yield client
    await client.close()


@pytest.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[dict[str, object]], unique_name: Callable[[str], str]
) -> AsyncIterator[AsyncDatabase[dict[str, object]]]:
    """A database unique to this test, dropped afterwards."""
    name = unique_name("t").replace("-", "_")[:60]
    yield mongo_client[name]
    await mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def private_stack(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PrivateKafka, PrivateMongo]]:
    """A broker and a MongoDB-protocol server of this test module's own, to stop and kill.

    Needs the devstack installed (`services` makes sure of it)."""
    folder = tmp_path_factory.mktemp("stack")
    kafka, mongo = PrivateKafka(folder), PrivateMongo(folder)
    try:
        kafka.start()
        mongo.start()
        yield kafka, mongo
    finally:
        kafka.close()
        mongo.close()


@pytest.fixture(scope="module")
def slow_stack(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowStack]:
    """A broker and a MongoDB-protocol server of this module's own, each behind a proxy
    that can add latency to every chunk they send."""
    folder = tmp_path_factory.mktemp("slow")
    port = free_port()
    kafka, mongo = PrivateKafka(folder, proxy_port=port), PrivateMongo(folder)
    proxies: list[LatencyProxy] = []
    try:
        kafka.start()
        mongo.start()
        proxies += [LatencyProxy(kafka.slow_port, port), LatencyProxy(mongo.port)]
        yield SlowStack(kafka, mongo, *proxies)
    finally:
        for proxy in proxies:
            proxy.close()
        kafka.close()
        mongo.close()
