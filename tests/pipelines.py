"""Running real `tidemark run` workers against real services, and checking what they did."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from pymongo.database import Database

from tests.support import Services, Topics, wait_until
from tidemark.config import Topology, load_topology
from tidemark.processor.kafka.transaction import Transaction
from tidemark.state.names import CHECKPOINTS, state_collection

ROOT = Path(__file__).resolve().parent.parent


def write_topology(
    path: Path, services: Services, db: str, name: str, source: str, sink: str, **extra: Any
) -> Path:
    """A count+sum-per-user topology tuned for fast failure detection.

    Its dead-letter topic is `<source>-dlq`, which the worker creates.
    """
    doc: dict[str, Any] = {
        "name": name,
        "kafka": {
            "bootstrap_servers": services.kafka,
            "consumer": {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300},
            "producer": {"transaction.timeout.ms": 5000},
        },
        "mongo": {"uri": services.mongo_uri, "database": db},
        "source": {"topic": source, "key": "user"},
        "pipeline": [
            {
                "aggregate": {
                    "id": "agg",
                    "key": "user",
                    "compute": {"count": "count", "total": {"sum": "amount"}},
                }
            }
        ],
        "sink": {"topic": sink},
        # State checkpoints lag Kafka commits, as in production, but by less.
        "checkpoint": {"interval": "300ms", "max_records": 500, "state_interval": "900ms"},
        "errors": {"dead_letter_topic": f"{source}-dlq"},
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def started_transaction(
    services: Services, tmp_path: Path, source: str, sink: str
) -> AsyncIterator[tuple[Topology, Transaction]]:
    """`write_topology`'s topology and its started `Transaction`, aborted at the end."""
    path = write_topology(tmp_path / "t.yaml", services, "unused", f"g-{source[-6:]}", source, sink)
    topology = load_topology(path)
    tx = Transaction(topology, "test")
    await tx.start()
    try:
        yield topology, tx
    finally:
        await tx.abort()


class Counting(NamedTuple):
    source: str
    sink: str
    name: str
    topology: Path


def counting_pipeline(
    make_topic: Topics,
    services: Services,
    db: str,
    tmp_path: Path,
    partitions: int,
    source_config: dict[str, str] | None = None,
    **extra: Any,
) -> Counting:
    """Source and sink topics unique to the test and a counting topology over them."""
    source = make_topic("clicks", partitions, source_config)
    sink = make_topic("out", partitions)
    make_topic.adopt(f"{source}-dlq")
    name = f"t-{source[-6:]}"
    topology = write_topology(tmp_path / "t.yaml", services, db, name, source, sink, **extra)
    return Counting(source, sink, name, topology)


@dataclass
class WorkerProcess:
    """One `tidemark run` subprocess, its output in a log file."""

    topology: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # after `tidemark run FILE`
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidemark", "run", str(self.topology), *self.args],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop_if_running()
            raise AssertionError(
                f"worker still running after {timeout}s; log:\n{self.tail()}"
            ) from None

    def run_until_exit(self, feed: Callable[[], None], timeout: float) -> int:
        """Call `feed` about every 0.3 s until the worker exits; its exit code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.stop_if_running()
                raise AssertionError(f"worker still running after {timeout}s:\n{self.tail()}")
            feed()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.3)
        return self.proc.returncode

    def wait_for_log(self, text: str, timeout: float) -> None:
        """Wait until the worker logged `text`."""
        wait_until(
            lambda: text in self.log.read_text(errors="replace"),
            timeout,
            f"{text!r} in {self.log.name}",
        )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class Truth:
    """What the pipeline must produce: per user, running counts and totals in order."""

    def __init__(self) -> None:
        self.events: dict[str, list[int]] = defaultdict(list)

    def add(self, user: str, amount: int) -> None:
        self.events[user].append(amount)

    def outputs(self) -> dict[str, list[dict[str, int]]]:
        expected: dict[str, list[dict[str, int]]] = {}
        for user, amounts in self.events.items():
            total, seq = 0, []
            for i, amount in enumerate(amounts, 1):
                total += amount
                seq.append({"count": i, "total": total})
            expected[user] = seq
        return expected

    def totals(self) -> dict[str, dict[str, int]]:
        return {u: {"count": len(a), "total": sum(a)} for u, a in self.events.items()}

    @property
    def count(self) -> int:
        return sum(len(a) for a in self.events.values())


def produce(
    services: Services,
    topic: str,
    records: list[tuple[bytes | None, bytes | None]],
    partition: int = -1,
) -> None:
    """Produce raw records keyed as given (same key, same partition) and wait for delivery."""
    producer = Producer(
        {"bootstrap.servers": services.kafka, "linger.ms": 10, "message.max.bytes": 4_000_000}
    )
    for key, value in records:
        producer.produce(topic, value, key, partition=partition)
        producer.poll(0)
    assert producer.flush(30) == 0, "records not delivered"


def produce_clicks(
    services: Services,
    topic: str,
    truth: Truth,
    users: list[str],
    n: int,
    seed: int,
    partition: int = -1,
) -> None:
    """`n` clicks with small integer amounts over `users`, recorded in `truth`."""
    records = []
    for i in range(n):
        user = users[(i * 7 + seed) % len(users)]
        amount = (i + seed) % 10 + 1
        truth.add(user, amount)
        records.append((user.encode(), orjson.dumps({"user": user, "amount": amount})))
    produce(services, topic, records, partition)


def end_offsets(services: Services, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": services.kafka, "group.id": "offsets-probe"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def checkpoint_offsets(db: Database[Any], name: str) -> dict[int, int | None]:
    return {d["partition"]: d.get("offset") for d in db[CHECKPOINTS].find({"topology": name})}


def wait_caught_up(
    db: Database[Any], name: str, ends: dict[int, int], timeout: float, log: str = ""
) -> None:
    """Wait until every partition's checkpoint reached its end offset."""

    def done() -> bool:
        offsets = checkpoint_offsets(db, name)
        return all((offsets.get(p) or 0) >= end for p, end in ends.items())

    try:
        wait_until(done, timeout, f"checkpoints to reach {ends}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; at {checkpoint_offsets(db, name)}\n{log}") from None


def read_topic(
    services: Services, topic: str, partitions: int, expected: int, timeout: float = 60
) -> list[Any]:
    """Every committed record of `topic`: wait for `expected`, then make sure no more come."""
    consumer = Consumer(
        {
            "bootstrap.servers": services.kafka,
            "group.id": f"reader-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while True:
            msg = consumer.poll(0.2)
            now = time.monotonic()
            if msg is not None and msg.error() is None:
                records.append(msg)
            if len(records) >= expected:
                quiet_until = quiet_until or now + 1.5
                if now > quiet_until:
                    return records
            elif now > deadline:
                raise AssertionError(f"read {len(records)} of {expected} records from {topic}")
    finally:
        consumer.close()


def outputs_by_key(messages: list[Any]) -> dict[str, list[dict[str, int]]]:
    found: dict[str, list[dict[str, int]]] = defaultdict(list)
    for m in messages:
        found[m.key().decode()].append(orjson.loads(m.value()))
    return dict(found)


def state_values(db: Database[Any], name: str) -> dict[str, Any]:
    return {d["k"]: d["v"] for d in db[state_collection(name)].find({"op": "agg"})}


def assert_outputs(
    found: dict[str, list[dict[str, int]]], expected: dict[str, list[dict[str, int]]]
) -> None:
    """Equal outputs, or a message naming the first key and position that differ."""
    problems = []
    for key in sorted(set(found) | set(expected)):
        got, want = found.get(key, []), expected.get(key, [])
        if got != want:
            i = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)),
            )
            problems.append(
                f"{key}: {len(got)} outputs, {len(want)} expected; first difference at {i}: "
                f"got {got[i : i + 3]}, expected {want[i : i + 3]}"
            )
    assert not problems, f"{len(problems)} keys differ:\n" + "\n".join(problems[:10])


CLI_ENV = {**os.environ, "TIDEMARK_LOG_LEVEL": "INFO"}  # progress logs on stderr: failures say more


def _cli(args: tuple[str | Path, ...]) -> list[str]:
    return [sys.executable, "-m", "tidemark", *map(str, args), "--json"]


class CliResult(NamedTuple):
    code: int
    doc: Any  # the --json document
    stderr: str


def tidemark(
    *args: str | Path, timeout: float = 90, env: dict[str, str] | None = None
) -> CliResult:
    """Run `tidemark ARGS --json` as a process; its exit code, JSON output and stderr."""
    try:
        done = subprocess.run(
            _cli(args),
            cwd=ROOT,
            env={**CLI_ENV, **(env or {})},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode(errors="replace")[-3000:]
        message = f"tidemark {args[0]} still running after {timeout}s:\n{stderr}"
        raise AssertionError(message) from None
    out = done.stdout.decode()
    try:
        doc = orjson.loads(out) if out.strip() else None
    except orjson.JSONDecodeError:
        raise AssertionError(f"not one JSON document: {out!r}\n{done.stderr.decode()}") from None
    return CliResult(done.returncode, doc, done.stderr.decode())


def tidemark_popen(*args: str | Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `tidemark ARGS --json` in the background: stdout to `log`, stderr to `log`.err."""
    with log.open("wb") as out, log.with_suffix(".err").open("wb") as err:
        return subprocess.Popen(
            _cli(args),
            cwd=ROOT,
            env=CLI_ENV,
            stdout=out,
            stderr=err,
        )
