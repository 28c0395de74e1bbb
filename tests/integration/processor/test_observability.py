"""A running worker seen as an on-call engineer sees it: /metrics parsed with the Prometheus
client's own parser, /healthz, /readyz, and `tidemark init` preparing a topology."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo.database import Database

from tests.pipelines import (
    ROOT,
    Truth,
    WorkerProcess,
    counting_pipeline,
    end_offsets,
    produce,
    produce_clicks,
    wait_caught_up,
    write_topology,
)
from tests.private_stack import free_port
from tests.support import Services, TopicFactory, wait_until
from tidemark.processor.observability.metrics import exposed_names
from tidemark.state.names import state_collection

pytestmark = pytest.mark.integration
PARTITIONS = 2
USERS = [f"m{i:02d}" for i in range(40)]


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""  # not listening yet


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample: name -> {sorted labels: value}."""
    status, body = get(port, "/metrics")
    assert status == 200, status
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return samples


def total(samples: dict[str, Any], name: str, **labels: str) -> float:
    return sum(
        v
        for key, v in samples.get(name, {}).items()
        if all(dict(key).get(k) == want for k, want in labels.items())
    )


def test_metrics_health_and_readiness_of_a_running_worker(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, _, name, topology = counting_pipeline(
        make_topic, services, sync_db.name, tmp_path, PARTITIONS
    )
    port = free_port()
    worker = WorkerProcess(topology, tmp_path / "worker.log", args=["--metrics-port", str(port)])
    truth = Truth()
    worker.start()
    try:
        wait_until(lambda: get(port, "/readyz")[0] == 200, 60, "/readyz to answer 200")
        ready = orjson.loads(get(port, "/readyz")[1])
        assert ready["joined"] and ready["waiting_for"] is None, ready
        status, body = get(port, "/healthz")
        assert status == 200 and orjson.loads(body)["ok"], body

        produce_clicks(services, source, truth, USERS, 1500, seed=1)
        produce(services, source, [(b"m00", b"not json")] * 3, partition=0)
        ends = end_offsets(services, source, PARTITIONS)
        wait_caught_up(sync_db, name, ends, 60, worker.tail())

        def lag_zero() -> bool:
            lag = scrape(port).get("tidemark_consumer_lag_records", {})
            return len(lag) == PARTITIONS and all(v == 0 for v in lag.values())

        wait_until(lag_zero, 30, f"consumer lag 0 on every partition: {scrape(port)}")
        m = scrape(port)
        events = sum(ends.values())
        assert total(m, "tidemark_records_in_total", topology=name) == events
        for p in range(PARTITIONS):
            assert total(m, "tidemark_records_in_total", partition=str(p)) == ends[p]
        assert total(m, "tidemark_records_out_total", topology=name) == truth.count
        assert total(m, "tidemark_dead_letters_total", reason="malformed_json") == 3, m.get(
            "tidemark_dead_letters_total"
        )
        for step in ("send_offsets", "check_epochs", "commit_transaction", "flush_state"):
            assert total(m, "tidemark_commit_seconds_count", step=step) > 0, step
        assert total(m, "tidemark_commits_total") > 0
        keys = sync_db[state_collection(name)].count_documents({})
        assert total(m, "tidemark_state_cache_misses_total") >= keys
        assert total(m, "tidemark_state_cache_hits_total") > 0
        assert total(m, "tidemark_state_flush_documents_sum") >= keys
        assert total(m, "tidemark_recoveries_total") == PARTITIONS
        assert total(m, "tidemark_batch_seconds_count") > 0
        assert total(m, "tidemark_assigned_partitions") == PARTITIONS
        assert total(m, "tidemark_ready") == 1
        ours = {n for n in m if n.startswith("tidemark_")}
        assert ours <= exposed_names(), ours - exposed_names()
        assert get(port, "/nowhere")[0] == 404

        # Stopping: not ready any more while it commits and leaves.
        assert worker.proc is not None
        worker.proc.terminate()
        assert worker.proc.wait(30) == 0, worker.tail()
    finally:
        worker.stop_if_running()
    log = worker.log.read_text()
    assert f'"topology": "{name}"' in log and '"worker": ' in log, "bound on every line"


def test_init_creates_what_a_topology_needs_and_is_idempotent(
    services: Services,
    make_topic: TopicFactory,
    sync_db: Database[Any],
    unique_name: Any,
    tmp_path: Path,
) -> None:
    source, sink = make_topic("clicks", 3), unique_name("out")
    make_topic.adopt(sink)
    make_topic.adopt(f"{source}-dlq")
    name = f"t-{source[-6:]}"
    topology = write_topology(tmp_path / "t.yaml", services, sync_db.name, name, source, sink)
    command = [sys.executable, "-m", "tidemark", "init", str(topology)]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"topic {source}: exists" in first.stdout, first.stdout
    assert f"topic {sink}: created, 3 partitions" in first.stdout, first.stdout
    assert set(end_offsets(services, sink, 3)) == {0, 1, 2}
    indexes = sync_db[state_collection(name)].index_information()
    assert any(i["key"] == [("p", 1)] for i in indexes.values()), indexes
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "created" not in again.stdout, again.stdout


def test_status_watch_prints_a_document_per_refresh_until_interrupted(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    _, _, _, topology = counting_pipeline(make_topic, services, sync_db.name, tmp_path, 2)
    command = [sys.executable, "-m", "tidemark", "status", str(topology), "--watch", "0.2"]
    with subprocess.Popen(
        [*command, "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        docs = [orjson.loads(proc.stdout.readline()) for _ in range(3)]  # three refreshes
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read()
    assert all(len(doc) == 2 and {r["partition"] for r in doc} == {0, 1} for doc in docs), docs
