"""`make bench`: the same workload through every contender, interleaved, checked, reported.

Each run of a contender gets its own sink topic and consumer group over one shared input
topic. Time runs from the first output's timestamp (the broker's append time: Tidemark's
outputs carry event time) to the moment the harness has read the last output with
`read_committed`. A contender whose final per-key values differ from the truth is marked
wrong and its speed does not count.

`tidemark-tumbling` runs the same aggregate per 10 s tumbling window of the Kafka record
timestamp with `emit: on_update`, so it too emits one output per input; its check sums the
last output per (key, window_start) over the windows of each key.

`--baseline DIR` adds the contender `tidemark-baseline`: the same topology run by an older
checkout in DIR (a git worktree of an earlier revision), started as `python -m tidemark run`
(or `python -m processor.cli run` for revisions from before the one import package) with the
working directory and PYTHONPATH set to DIR, so the current code and that revision are
measured side by side in one interleaved run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pymongo import MongoClient

from bench import cpu
from bench.workload import Truth, produce_workload

ROOT = Path(__file__).resolve().parent.parent
QUIX_PYTHON = ROOT / "bench/.venv-quix/bin/python"
RESULTS = ROOT / "bench/results"
TUMBLING = "tidemark-tumbling"
# Quix Streams at its best and as users run it: exactly-once at its default commit interval
# (5 s) and at 1 s, and at-least-once for reference. Arguments after STATE_DIR of quix_app.py.
QUIX = {
    "quixstreams": ["exactly-once"],
    "quixstreams-1s": ["exactly-once", "1"],
    "quixstreams-alo": ["at-least-once"],
}
CONTENDERS = ("ceiling", "tidemark", TUMBLING, *QUIX)
BASELINE = "tidemark-baseline"
PARTITIONS = 4


@dataclass
class Result:
    contender: str
    run: int
    events: int
    seconds: float
    events_per_s: float
    correct: bool
    peak_rss_mb: float
    note: str = ""
    # CPU seconds over the run: the contender's process, the broker, the MongoDB server.
    cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    mongo_cpu_s: float = 0.0


def create_topics(bootstrap: str, names: list[str], config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, PARTITIONS, 1, config=config or {}) for n in names])
    for future in futures.values():
        future.result(timeout=30)


def delete_topics(bootstrap: str, names: list[str], group: str) -> None:
    """Delete a measured run's topics: `names`, and any topic named after its `group`
    (Tidemark's dead letters, Quix's changelogs). Left behind, they filled the broker's
    disk by gigabytes over a few runs and slowed the later ones."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [t for t in admin.list_topics(timeout=15).topics if t in names or group in t]
    for future in admin.delete_topics(wanted).values() if wanted else ():
        future.result(timeout=30)


def command(
    contender: str,
    env: dict[str, str],
    source: str,
    sink: str,
    group: str,
    events: int,
    workdir: Path,
) -> list[str]:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    if contender == "ceiling":
        return [
            sys.executable,
            str(ROOT / "bench/ceiling.py"),
            bootstrap,
            source,
            sink,
            group,
            str(events),
        ]
    if contender in QUIX:
        return [
            str(QUIX_PYTHON),
            str(ROOT / "bench/quix_app.py"),
            bootstrap,
            source,
            sink,
            group,
            str(workdir / "quix-state"),
            *QUIX[contender],
        ]
    aggregate: dict[str, Any] = {
        "id": "per_user",
        "key": "user_id",
        "compute": {"count": "count", "total": {"sum": "amount"}},
    }
    if contender == TUMBLING:  # event time: the Kafka record timestamp (no `time:` field)
        aggregate |= {"window": {"type": "tumbling", "size": "10s"}, "emit": "on_update"}
    topology = {
        "name": group,
        "kafka": {"bootstrap_servers": bootstrap, "consumer": {"session.timeout.ms": 6000}},
        "mongo": {"uri": env["MONGO_URI"], "database": "bench"},
        "source": {"topic": source, "key": "user_id"},
        "pipeline": [{"aggregate": aggregate}],
        "sink": {"topic": sink},
        "checkpoint": {"interval": "1s"},
    }
    path = workdir / "topology.yaml"
    path.write_text(yaml.safe_dump(topology))
    if contender == BASELINE:
        return [sys.executable, "-m", "processor.cli", "run", str(path)]
    return [sys.executable, "-m", "tidemark", "run", str(path)]


def launch_context(
    contender: str, env: dict[str, str], baseline: Path | None
) -> tuple[Path, dict[str, str]]:
    """Working directory and environment of a contender: the baseline runs from its checkout."""
    if contender != BASELINE:
        return ROOT, env
    if baseline is None:
        raise ValueError(f"{BASELINE} needs --baseline DIR")
    return baseline, {**env, "PYTHONPATH": str(baseline)}


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


Slot = str | tuple[str, int]  # a key, or a key and a window_start
Kept = dict[Slot, list[int]]


@dataclass(frozen=True)
class Check:
    """How a kind of contender is checked: `slot` names the earlier output an output replaces,
    `correct` compares the last `[count, total]` per slot with the truth."""

    slot: Callable[[str, dict[str, Any]], Slot]
    correct: Callable[[Kept, Truth], bool]
    wrong: str


def _per_key(key: str, value: dict[str, Any]) -> Slot:
    return key


def _running_correct(last: Kept, truth: Truth) -> bool:
    """A running aggregate: the last output per key is the key's final count and sum."""
    return last == truth.totals


def _per_window(key: str, value: dict[str, Any]) -> Slot:
    return key, value["window_start"]


def _windowed_correct(last: Kept, truth: Truth) -> bool:
    """Windows: the last output per (key, window_start), summed over a key's windows."""
    sums: dict[str, list[int]] = {}
    for slot, (count, total) in last.items():
        key, _start = cast(tuple[str, int], slot)
        entry = sums.setdefault(key, [0, 0])
        entry[0] += count
        entry[1] += total
    return sums == truth.totals


RUNNING = Check(_per_key, _running_correct, "final per-key values differ from the truth")
WINDOWED = Check(_per_window, _windowed_correct, "per-key sums over windows differ from the truth")


def check_for(contender: str) -> Check:
    return WINDOWED if contender == TUMBLING else RUNNING


def read_outputs(
    bootstrap: str,
    sink: str,
    events: int,
    proc: subprocess.Popen[bytes],
    timeout: float,
    slot: Callable[[str, dict[str, Any]], Slot] = _per_key,
    on_first: Callable[[], None] = lambda: None,
) -> tuple[float, float, Kept, float]:
    """Read `events` committed outputs: (first output's append time, end time, last
    `[count, total]` per `slot`, rss); `on_first` is called when the first one is read."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    reader.assign([TopicPartition(sink, p, 0) for p in range(PARTITIONS)])
    last: Kept = {}
    first_ts, seen, rss = float("inf"), 0, 0.0
    deadline = time.monotonic() + timeout
    try:
        while seen < events:
            if time.monotonic() > deadline or proc.poll() not in (None, 0):
                raise TimeoutError(f"{seen} of {events} outputs (exit code {proc.poll()})")
            for msg in reader.consume(5000, 0.5):
                if msg.error():
                    continue
                if not seen:
                    on_first()
                seen += 1
                first_ts = min(first_ts, msg.timestamp()[1] / 1000)
                value = orjson.loads(msg.value())
                last[slot(msg.key().decode(), value)] = [value["count"], value["total"]]
            rss = max(rss, peak_rss_mb(proc.pid))
        return first_ts, time.time(), last, rss
    finally:
        reader.close()


def run_one(
    contender: str,
    run: int,
    env: dict[str, str],
    source: str,
    truth: Truth,
    events: int,
    timeout: float,
    baseline: Path | None = None,
) -> Result:
    tag = f"{contender}-{run}-{uuid.uuid4().hex[:6]}"
    sink, group = f"bench-out-{tag}", f"bench-{tag}"
    # The broker stamps outputs: Tidemark gives its outputs the event time (here the input's
    # produce time), so their create time would start the clock before the contender did.
    create_topics(
        env["KAFKA_BOOTSTRAP_SERVERS"], [sink], {"message.timestamp.type": "LogAppendTime"}
    )
    check = check_for(contender)
    cpu.wait_idle()
    with tempfile.TemporaryDirectory() as tmp:
        argv = command(contender, env, source, sink, group, events, Path(tmp))
        cwd, proc_env = launch_context(contender, env, baseline)
        if cwd != ROOT and (cwd / "tidemark/__main__.py").exists():
            argv[1:3] = ["-m", "tidemark"]  # a baseline that has the one import package
        log = open(RESULTS / "raw" / f"{tag}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(argv, cwd=cwd, env=proc_env, stdout=log, stderr=subprocess.STDOUT)
        # CPU over the same span as the rate, from the first output on: start-up (imports,
        # joining the group) is not a per-event cost.
        meter = cpu.Meter(proc.pid)
        try:
            first, end, last, rss = read_outputs(
                env["KAFKA_BOOTSTRAP_SERVERS"], sink, events, proc, timeout, check.slot, meter.start
            )
            used, broker, mongo = meter.used()
            seconds = end - first
            correct = check.correct(last, truth)
            note = "" if correct else check.wrong
            return Result(
                contender,
                run,
                events,
                seconds,
                events / seconds,
                correct,
                rss,
                note,
                used,
                broker,
                mongo,
            )
        except TimeoutError as exc:
            return Result(contender, run, events, float("nan"), 0.0, False, 0.0, str(exc))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
            delete_topics(env["KAFKA_BOOTSTRAP_SERVERS"], [sink], group)


def throughput(args: argparse.Namespace, env: dict[str, str]) -> list[Result]:
    source = f"bench-in-{uuid.uuid4().hex[:6]}"
    create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], [source])
    started = time.monotonic()
    truth = produce_workload(env["KAFKA_BOOTSTRAP_SERVERS"], source, args.events, args.keys)
    print(
        f"produced {args.events} events over {len(truth.totals)} keys in "
        f"{time.monotonic() - started:.0f}s",
        flush=True,
    )
    results: list[Result] = []
    for run in range(1, args.runs + 1):
        for contender in args.contenders.split(","):
            result = run_one(
                contender, run, env, source, truth, args.events, args.timeout, args.baseline
            )
            results.append(result)
            per_event = 1e6 / result.events
            print(
                f"run {run} {contender:<17} {result.events_per_s:>10,.0f} ev/s "
                f"correct={result.correct} rss={result.peak_rss_mb:.0f}MB "
                f"cpu µs/event: own {result.cpu_s * per_event:.1f} broker "
                f"{result.broker_cpu_s * per_event:.1f} mongo "
                f"{result.mongo_cpu_s * per_event:.1f} {result.note}",
                flush=True,
            )
    delete_topics(env["KAFKA_BOOTSTRAP_SERVERS"], [source], source)
    return results


def main() -> int:
    from bench.recovery import memory, recovery
    from bench.report import write_report

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--recovery-sizes", default="10000,100000,1000000")
    parser.add_argument("--memory-keys", default="10000,100000")
    parser.add_argument("--parts", default="throughput,recovery,memory")
    parser.add_argument(
        "--baseline",
        type=lambda p: Path(p).resolve(),
        metavar="DIR",
        help=f"checkout of an older revision to measure as the contender {BASELINE}",
    )
    parser.add_argument(
        "--results",
        type=lambda p: Path(p).resolve(),
        default=RESULTS,
        metavar="DIR",
        help="where the JSON results and latest.md go (raw logs stay in bench/results/raw)",
    )
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    args = parser.parse_args()
    contenders = args.contenders.split(",")
    if args.baseline is not None:
        runnable = ("processor/cli.py", "processor/cli/__init__.py", "tidemark/__main__.py")
        if not any((args.baseline / name).is_file() for name in runnable):
            parser.error(f"--baseline {args.baseline}: not a Tidemark checkout")
        if BASELINE not in contenders:
            args.contenders = ",".join([*contenders, BASELINE])
    elif BASELINE in contenders:
        parser.error(f"the contender {BASELINE} needs --baseline DIR")
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    if "throughput" in parts:
        results = throughput(args, env)
        (out / "throughput.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
        print(summary(results), flush=True)
    if "recovery" in parts:
        recoveries = []
        for size in map(int, args.recovery_sizes.split(",")):
            for contender in ("tidemark", "quixstreams"):
                for r in recovery(contender, size, env):
                    print(
                        f"recovery {r.contender:<17} {size:>9,} keys {r.seconds:6.1f}s {r.note}",
                        flush=True,
                    )
                    recoveries.append(asdict(r))
        (out / "recovery.json").write_text(json.dumps(recoveries, indent=2))
    if "memory" in parts:
        sizes = list(map(int, args.memory_keys.split(",")))
        cache = sizes[0] // 5  # below both cardinalities, so the bounds are what binds
        memories = [asdict(memory(k, cache, 200_000, env)) for k in sizes]
        print(f"memory {memories}", flush=True)
        (out / "memory.json").write_text(json.dumps(memories, indent=2))
    MongoClient(env["MONGO_URI"]).drop_database("bench")
    write_report(out)
    if not args.no_charts:
        workload = f"{args.events:,} events, {args.keys:,} Zipf keys"
        charts = [str(QUIX_PYTHON), str(ROOT / "bench/charts.py"), str(out), workload]
        subprocess.run(charts, check=True)
    print(f"report: {out / 'latest.md'}")
    return 0


def summary(results: list[Result]) -> str:
    from bench.report import throughput_table

    return "\n".join(throughput_table([asdict(r) for r in results])[0])


if __name__ == "__main__":
    sys.exit(main())
