"""Recovery time against state size, and peak memory against key cardinality.

Recovery: load state of N keys (one event per key), wait until it is durable, SIGKILL the
worker, restart it, produce one more event, and time from the restart to that event's
output being readable with `read_committed`. Quix Streams is measured cold (local state
directory deleted: restore from its changelog) and warm (state directory kept).

Memory: peak RSS of one Tidemark worker with the cache bound fixed while the number of
distinct keys grows tenfold.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from pymongo import MongoClient

from bench.run import (
    PARTITIONS,
    ROOT,
    command,
    create_topics,
    delete_topics,
    peak_rss_mb,
    read_outputs,
)
from bench.workload import produce_workload


@dataclass
class Recovery:
    contender: str
    keys: int
    seconds: float
    note: str = ""


@dataclass
class Memory:
    keys: int
    cache_entries: int
    peak_rss_mb: float


def _produce_keys(bootstrap: str, topic: str, keys: int) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "queue.buffering.max.messages": 2_000_000}
    )
    for i in range(keys):
        user = f"user-{i:07d}"
        while True:
            try:
                producer.produce(topic, orjson.dumps({"user_id": user, "amount": 1}), user.encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def _first_output_after(bootstrap: str, sink: str, ends: dict[int, int], timeout: float) -> float:
    """Wait for a committed output past `ends`; the time it was read."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    reader.assign([TopicPartition(sink, p, o) for p, o in ends.items()])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = reader.poll(0.05)
            if msg is not None and msg.error() is None:
                return time.monotonic()
        raise TimeoutError(f"no output within {timeout}s")
    finally:
        reader.close()


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        probe.close()


def _restart_until_output(
    argv: list[str], env: dict[str, str], source: str, sink: str, timeout: float
) -> tuple[float, subprocess.Popen[bytes]]:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    ends = _ends(bootstrap, sink)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _produce_keys(bootstrap, source, 1)
        return _first_output_after(bootstrap, sink, ends, timeout) - started, proc
    except TimeoutError:
        proc.kill()
        proc.wait()
        raise


def _wait_durable(
    contender: str, env: dict[str, str], group: str, source: str, timeout: float
) -> None:
    """Tidemark: until every checkpoint reached the end (the state of N keys is stored).
    Quix Streams commits its changelog with its outputs, so a short pause does."""
    if contender != "tidemark":
        time.sleep(3)
        return
    ends = _ends(env["KAFKA_BOOTSTRAP_SERVERS"], source)
    checkpoints = MongoClient(env["MONGO_URI"])["bench"]["checkpoints"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = {d["partition"]: d.get("offset") or 0 for d in checkpoints.find({"topology": group})}
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            return
        time.sleep(0.5)
    raise TimeoutError("state checkpoints did not reach the end")


def recovery(
    contender: str, keys: int, env: dict[str, str], timeout: float = 900
) -> list[Recovery]:
    """Load `keys` keys, then kill and restart: warm, and for Quix also cold."""
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    tag = uuid.uuid4().hex[:6]
    source, sink, group = f"rec-in-{tag}", f"rec-out-{tag}", f"rec-{tag}"
    create_topics(bootstrap, [source, sink])
    variants = ["warm", "cold"] if contender == "quixstreams" else [""]
    results: list[Recovery] = []
    with tempfile.TemporaryDirectory() as tmp:
        argv = command(contender, env, source, sink, group, keys, Path(tmp))
        _produce_keys(bootstrap, source, keys)
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            read_outputs(bootstrap, sink, keys, proc, timeout)
            _wait_durable(contender, env, group, source, timeout)
            for variant in variants:
                label = f"{contender} {variant}".strip()
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                if variant == "cold":
                    shutil.rmtree(Path(tmp) / "quix-state", ignore_errors=True)
                try:
                    seconds, proc = _restart_until_output(argv, env, source, sink, timeout)
                    results.append(Recovery(label, keys, seconds))
                except TimeoutError as exc:
                    results.append(Recovery(label, keys, float("nan"), str(exc)))
                _wait_durable(contender, env, group, source, timeout)
        except TimeoutError as exc:
            results.append(Recovery(contender, keys, float("nan"), f"loading state: {exc}"))
        finally:
            proc.kill()
            proc.wait()
            delete_topics(bootstrap, [source, sink], group)
    return results


def memory(keys: int, cache_entries: int, events: int, env: dict[str, str]) -> Memory:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    tag = uuid.uuid4().hex[:6]
    source, sink, group = f"mem-in-{tag}", f"mem-out-{tag}", f"mem-{tag}"
    create_topics(bootstrap, [source, sink])
    produce_workload(bootstrap, source, events, keys, skew=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        argv = command("tidemark", env, source, sink, group, events, Path(tmp))
        topology = Path(tmp) / "topology.yaml"
        # Both memory bounds fixed: the cache, and dirty plus in-flight keys.
        text = topology.read_text().replace(
            "checkpoint:\n", f"checkpoint:\n  max_dirty_keys: {cache_entries}\n"
        )
        topology.write_text(text + f"state:\n  cache_entries: {cache_entries}\n")
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _, _, _, rss = read_outputs(bootstrap, sink, events, proc, 900)
            return Memory(keys, cache_entries, max(rss, peak_rss_mb(proc.pid)))
        finally:
            proc.kill()
            proc.wait()
            delete_topics(bootstrap, [source, sink], group)
