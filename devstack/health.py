"""Wait until the local Kafka broker and MongoDB-protocol server are usable, or fail."""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from confluent_kafka.admin import AdminClient, NewTopic
from pymongo import MongoClient


def kafka_ready(bootstrap: str) -> str | None:
    """Return None when the broker answers metadata and can create a topic, else the reason."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
    try:
        admin.list_topics(timeout=2)
        name = f"_tidemark_health_{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=10)
        admin.delete_topics([name])[name].result(timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
        return f"{type(exc).__name__}: {exc}"
    return None


def mongo_ready(uri: str) -> str | None:
    """Return None when the server answers ping, else the reason."""
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
            client.admin.command("ping")
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--mongo", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    checks = {"kafka": lambda: kafka_ready(args.kafka), "mongo": lambda: mongo_ready(args.mongo)}
    reasons: dict[str, str | None] = {}
    while checks and time.monotonic() < deadline:
        for name, check in list(checks.items()):
            reasons[name] = check()
            if reasons[name] is None:
                print(f"devstack: {name} is ready", file=sys.stderr)
                del checks[name]
        if checks:
            time.sleep(1)
    for name in checks:
        print(
            f"devstack: {name} not healthy after {args.timeout}s: {reasons[name]}", file=sys.stderr
        )
    return 1 if checks else 0


if __name__ == "__main__":
    sys.exit(main())
