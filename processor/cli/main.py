"""The `tidemark` command."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import signal
import sys

import structlog

from tidemark.config import ConfigError, Topology, load_topology, secrets
from tidemark.config.loader import FieldError
from tidemark.operators.events import StepError
from tidemark.processor.cli.commands import HANDLERS, add_parsers
from tidemark.processor.cli.commands import run as commands_run
from tidemark.processor.observability import logs

EXIT_CONFIG = 2
EXIT_TOPOLOGY = 3
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's `mallopt` parameters (malloc.h)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tidemark` console script."""
    parser = argparse.ArgumentParser(prog="tidemark", description="Stateful stream processor")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check a topology file; exit 2 if invalid")
    validate.add_argument("file")
    run = commands.add_parser("run", help="run one worker of a topology")
    run.add_argument("file")
    run.add_argument(
        "--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port"
    )
    init = commands.add_parser("init", help="create missing topics, collections and indexes")
    init.add_argument("file")
    init.add_argument("--partitions", type=int, default=None, help="for topics created")
    init.add_argument("--replication-factor", type=int, default=-1, help="default: broker's")
    commands.add_parser("schema", help="print the JSON Schema of topology files")
    demo = commands.add_parser("demo", help="produce sample events, run, print the aggregates")
    demo.add_argument("file")
    demo.add_argument("--events", type=int, default=5000)
    add_parsers(commands)
    args = parser.parse_args(argv)

    if args.command == "schema":
        print(json.dumps(Topology.model_json_schema(), indent=2))
        return 0
    try:
        topology = _load(args.file)
    except ConfigError as exc:
        print(secrets.scrub(str(exc)), file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "validate":
        print(f"{args.file}: ok")
        return 0
    if args.command in HANDLERS:
        logs.configure("WARNING", topology.logging.format)
        try:
            return asyncio.run(commands_run(topology, args))
        except KeyboardInterrupt:
            return 0 if args.command == "status" else EXIT_INTERRUPTED
    if args.command == "serve":
        from tidemark.processor.cli.features import serve

        logs.configure("WARNING", topology.logging.format)
        return serve(topology, args)
    if args.command == "init":
        from tidemark.processor.cli.init import initialize

        return asyncio.run(initialize(topology, args.partitions, args.replication_factor))
    level = "WARNING" if args.command == "demo" else topology.logging.level
    logs.configure(level, topology.logging.format)
    if args.command == "demo":
        from tidemark.processor.cli.demo import run_demo

        return asyncio.run(run_demo(topology, args.events))
    return asyncio.run(_run(topology, args.metrics_port))


def _load(path: str) -> Topology:
    from tidemark.operators import build_pipeline

    topology = load_topology(path)
    try:
        # Expressions, custom callables and the steps' order are checked at load, not at the
        # first record.
        build_pipeline(topology)
    except StepError as exc:
        raise ConfigError(path, [FieldError(exc.path, str(exc))]) from exc
    return topology


def _tune_gc() -> None:
    """Fewer cyclic collections in a worker. It allocates several short-lived objects per
    event and keeps a cache of long-lived ones, so the default thresholds (a young
    collection every 700 allocations, and full ones that walk the whole cache) cost it a
    third of its CPU per event (BENCHMARKS.md, "CPU per event"). Its per-event data is
    acyclic and dies young, within a batch."""
    gc.freeze()  # what start-up made (modules, clients, settings) is never walked again
    gc.set_threshold(50_000, 50, 100)


def _tune_malloc() -> None:
    """Keep memory a batch frees for the next batch. By default glibc hands the top of its
    heap back to the kernel once 128 KiB of it is free, and serves each block of 128 KiB or
    more (a batch's set of keys, say) with an `mmap` of its own: a worker at 100,000 keys
    made 1,100 `brk` calls in 5 s and took a page fault for each page it got back
    (BENCHMARKS.md, "CPU per event"). A C library other than glibc keeps its own policy."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 4 << 20)
    mallopt(M_TRIM_THRESHOLD, 64 << 20)


async def _run(topology: Topology, metrics_port: int | None) -> int:
    from tidemark.features.registry import GroupConflict
    from tidemark.processor.kafka.topics import TopologyError
    from tidemark.processor.observability.http import Endpoints
    from tidemark.processor.runtime.worker import Worker

    worker = Worker(topology)
    logs.bind_worker(topology.name, worker.owner)
    _tune_gc()
    _tune_malloc()
    if metrics_port is not None:
        Endpoints(metrics_port, worker.health.live, worker.health.ready)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    except (TopologyError, GroupConflict) as exc:
        print(f"tidemark: {secrets.scrub(str(exc))}", file=sys.stderr)
        return EXIT_TOPOLOGY
    except Exception:  # noqa: BLE001 - logged with its traceback, then a plain exit code
        # One structured line with the traceback, credentials masked; the exit code says the
        # rest to whatever restarts the worker.
        structlog.get_logger("tidemark.worker").exception("worker_failed")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
