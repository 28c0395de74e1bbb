"""The operations commands: `status`, `snapshot`, `state get`, `replay`.

Each prints one JSON document with `--json`, a readable table without. Exit codes: 0 done,
1 the operation failed or was refused (the message says why; nothing half-done is left
running), 2 invalid topology file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config import Topology, secrets
from tidemark.config.errors import TidemarkError
from tidemark.features.registry import FEATURE_GROUPS, GroupInfo, group_id
from tidemark.processor.cli import ops
from tidemark.processor.cli.features import add_parsers as features_parsers
from tidemark.processor.cli.features import features, group_status
from tidemark.processor.coordination.replay import From, Replay, Request
from tidemark.processor.observability.http import Endpoints, Verdict

EXIT_FAILED = 1
Handler = Callable[[Topology, AsyncDatabase[Any], argparse.Namespace], Awaitable[Any]]


def add_parsers(commands: Any) -> None:
    """Register the operations subcommands on the `tidemark` parser."""
    status = commands.add_parser("status", help="where every partition stands")
    _common(status)
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 2) until Ctrl-C",
    )

    snapshot = commands.add_parser("snapshot", help="take, list, restore or prune snapshots")
    snapshot.add_argument("action", choices=["take", "list", "restore", "prune"])
    _common(snapshot)
    snapshot.add_argument("--partition", type=int, required=True)
    snapshot.add_argument("--version", type=int, help="restore: this version (default newest)")

    state = commands.add_parser("state", help="read operator state")
    state.add_argument("action", choices=["get"])
    _common(state)
    state.add_argument("--operator", required=True, help="operator id, e.g. per_user")
    state.add_argument("--key", required=True)
    state.add_argument("--partition", type=int, help="default: every partition holding the key")
    state.add_argument("--as-of-offset", type=int, help="value at the retained checkpoint <= O")

    replay = commands.add_parser("replay", help="rebuild one partition while the group runs")
    _common(replay)
    replay.add_argument("--partition", type=int, required=True)
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-snapshot", type=int, metavar="V")
    start.add_argument("--from-start", action="store_true")
    start.add_argument("--from-offset", type=int, metavar="O")
    start.add_argument("--from-time", type=_timestamp, metavar="ISO8601")
    replay.add_argument("--to-offset", type=int, metavar="O", help="default: end seen at start")
    replay.add_argument("--emit", action="store_true", help="re-emit already committed outputs")
    replay.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    replay.add_argument("--force", action="store_true", help="take over from a dead operation")
    replay.add_argument("--ack-timeout", type=float, default=60.0, metavar="SECONDS")
    replay.add_argument(
        "--metrics-port", type=int, help="serve /metrics (replay progress) while it runs"
    )
    features_parsers(commands)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _timestamp(text: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


async def run(topology: Topology, args: argparse.Namespace) -> int:
    """Run one operations command; its exit code."""
    handler = HANDLERS[args.command]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        topology.mongo.uri, **topology.mongo.client_args()
    )
    try:
        if getattr(args, "watch", None):
            await _watch(topology, client[topology.mongo.database], args)
            return 0
        result = await handler(topology, client[topology.mongo.database], args)
    except TidemarkError as exc:  # refused or failed, saying why; a bug keeps its traceback
        _fail(args, str(exc))
        return EXIT_FAILED
    finally:
        await client.close()
    _print(args, result)
    return 0


def _fail(args: argparse.Namespace, message: str) -> None:
    message = secrets.scrub(message)
    if args.json:
        print(json.dumps({"error": message}))
    print(f"tidemark {args.command}: {message}", file=sys.stderr)


async def _status(t: Topology, db: AsyncDatabase[Any], args: argparse.Namespace) -> Any:
    """The partitions; with a features sink, the feature group's freshness and drift too."""
    partitions = await ops.status(t, db)
    if t.feature_group is None:
        return partitions
    group = GroupInfo.of(t)
    found = await db[FEATURE_GROUPS].find_one({"_id": group_id(group.group, group.version)})
    info = GroupInfo.from_doc(found) if found is not None else group
    row = {"group": info.group, "version": info.version, **await group_status(db, info)}
    return {"partitions": partitions, "features": [row]}


async def _watch(t: Topology, db: AsyncDatabase[Any], args: argparse.Namespace) -> None:
    """`status --watch`: the table redrawn in place on a terminal; with `--json` or into a
    pipe, one document per refresh, so `tidemark status --watch --json | jq` works too."""
    redraw = sys.stdout.isatty() and not args.json
    # Ctrl-C ends the loop after the refresh in flight instead of cancelling it: a refresh
    # cancelled inside a MongoDB call or a Kafka call on a thread could hold the exit up.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        while not stop.is_set():
            rows = await ops.status(t, db)
            if redraw:
                print("\x1b[H\x1b[2J", end="")  # home, clear screen
                stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
                print(f"{t.name}  {stamp}  every {args.watch:g}s, Ctrl-C to stop\n")
            _print(args, rows)
            sys.stdout.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.watch)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _snapshot(t: Topology, db: AsyncDatabase[Any], args: argparse.Namespace) -> Any:
    p = args.partition
    if args.action == "list":
        return await ops.snapshot_list(t, db, p)
    if args.action == "take":
        return await ops.snapshot_take(t, db, p)
    if args.action == "restore":
        return await ops.snapshot_restore(t, db, p, args.version)
    return await ops.snapshot_prune(t, db, p)


async def _state(t: Topology, db: AsyncDatabase[Any], args: argparse.Namespace) -> Any:
    return await ops.state_get(t, db, args.operator, args.key, args.partition, args.as_of_offset)


async def _replay(t: Topology, db: AsyncDatabase[Any], args: argparse.Namespace) -> Any:
    request = Request(
        args.partition,
        _start(args),
        version=args.from_snapshot,
        offset=args.from_offset,
        time=args.from_time,
        to_offset=args.to_offset,
        emit=args.emit,
    )
    replay = Replay(t, db, progress=False if args.json else None)
    if args.metrics_port is not None:
        ok = Verdict(True)
        Endpoints(args.metrics_port, lambda: ok, lambda: ok)
    if args.dry_run:
        return {"dry_run": True, **(await replay.plan(request)).describe()}
    plan = await replay.run(request, force=args.force, ack_timeout=args.ack_timeout)
    return {"dry_run": False, "replayed": plan.end - plan.begin, **plan.describe()}


def _start(args: argparse.Namespace) -> From:
    """Which of the mutually exclusive --from-* options was given."""
    if args.from_snapshot is not None:
        return "snapshot"
    if args.from_start:
        return "start"
    return "offset" if args.from_offset is not None else "time"


HANDLERS: dict[str, Handler] = {
    "status": _status,
    "snapshot": _snapshot,
    "state": _state,
    "replay": _replay,
    "features": features,
}


def _print(args: argparse.Namespace, result: Any) -> None:
    if args.json:
        print(json.dumps(result, default=str))
        return
    if isinstance(result, dict) and all(isinstance(v, list) for v in result.values()):
        for i, (section, rows) in enumerate(result.items()):  # `status` with features
            if i:
                print()
            print(f"{section}:")
            _print_table(rows)
        return
    _print_table(result if isinstance(result, list) else [result])


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
