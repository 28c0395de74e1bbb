"""Credentials come from the environment and from files, and are never printed: not in logs,
errors, `status`, metrics or dead letters."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from pymongo.database import Database

from tests.pipelines import (
    WorkerProcess,
    counting_pipeline,
    end_offsets,
    produce,
    tidemark,
    wait_caught_up,
)
from tests.private_stack import free_port
from tests.support import Services, TopicFactory

pytestmark = pytest.mark.integration


def with_credentials(topology: Path, services: Services, secret_file: Path) -> None:
    """The test topology, its MongoDB password from `${TEST_MONGO_PASSWORD}` in the URI and
    its SASL password from a file. The local servers take any credentials: FerretDB on
    SQLite ignores them, and the broker's listener is plaintext."""
    doc = yaml.safe_load(topology.read_text())
    host = services.mongo_uri.removeprefix("mongodb://")
    doc["mongo"]["uri"] = f"mongodb://alice:${{TEST_MONGO_PASSWORD}}@{host}/?authMechanism=PLAIN"
    doc["kafka"]["options"] = {"sasl.username": "bob", "sasl.password_file": str(secret_file)}
    topology.write_text(yaml.safe_dump(doc, sort_keys=False))


def validate(topology: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tidemark", "validate", str(topology)]
    done = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    return done


def dead_letter_headers(services: Services, topic: str) -> list[tuple[str, bytes]]:
    consumer = Consumer({"bootstrap.servers": services.kafka, "group.id": uuid.uuid4().hex})
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        msg = None
        for _ in range(100):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.error() is None, f"no dead letter on {topic}"
        return list(msg.headers() or [])
    finally:
        consumer.close()


def test_no_secret_is_ever_printed(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    mongo_password, sasl_password = f"mpw-{uuid.uuid4().hex}", f"spw-{uuid.uuid4().hex}"
    secret_file = tmp_path / "sasl-password"
    secret_file.write_text(sasl_password + "\n")
    source, _, name, topology = counting_pipeline(make_topic, services, sync_db.name, tmp_path, 1)
    with_credentials(topology, services, secret_file)
    env = {"TEST_MONGO_PASSWORD": mongo_password}
    printed: list[str] = []

    checked = validate(topology, env)
    assert checked.returncode == 0, checked.stderr
    printed += [checked.stdout, checked.stderr]

    port = free_port()
    worker = WorkerProcess(topology, tmp_path / "worker.log", env, ["--metrics-port", str(port)])
    worker.start()
    try:
        good = [(b"u1", b'{"user": "u1", "amount": 3}')] * 20
        produce(services, source, [*good, (b"u2", b"not json")])
        wait_caught_up(sync_db, name, end_offsets(services, source, 1), 60, worker.tail())
        status = tidemark("status", topology, env=env)
        assert status.code == 0, status.stderr
        printed += [status.stderr, str(status.doc)]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        printed.append(metrics.decode())
        assert b"tidemark_records_in_total" in metrics
    finally:
        assert worker.terminate(30) == 0, worker.tail()
    printed.append(worker.log.read_text())
    printed += [
        v.decode(errors="replace") for _, v in dead_letter_headers(services, f"{source}-dlq")
    ]

    # A URI the client refuses, and a topology with a bad field: the errors name the
    # problem, never the password.
    broken = yaml.safe_load(topology.read_text())
    broken["mongo"]["uri"] = broken["mongo"]["uri"].replace("/?", ":notaport/?")
    topology.write_text(yaml.safe_dump(broken))
    failed = WorkerProcess(topology, tmp_path / "failed.log", env).start()
    assert failed.wait(60) == 1, failed.tail()
    printed.append(failed.log.read_text())
    assert "worker_failed" in printed[-1], printed[-1]
    broken["checkpoint"]["interval"] = "soon"
    topology.write_text(yaml.safe_dump(broken))
    invalid = validate(topology, env)
    assert invalid.returncode == 2 and "checkpoint.interval" in invalid.stderr, invalid.stderr
    printed += [invalid.stdout, invalid.stderr]

    everything = "\n".join(printed)
    for secret in (mongo_password, sasl_password):
        assert secret not in everything, f"{secret} printed"
