"""`tidemark features list|describe|baseline FILE` and `tidemark serve FILE`."""

from __future__ import annotations

import argparse
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config import Topology
from tidemark.features.client import AsyncFeatureClient
from tidemark.features.registry import FEATURE_GROUPS, GroupInfo, group_id, registered
from tidemark.processor.cli.ops import OperationError


def add_parsers(commands: Any) -> None:
    features = commands.add_parser("features", help="feature groups: list, describe, baseline")
    features.add_argument("action", choices=["list", "describe", "baseline"])
    features.add_argument("file")
    features.add_argument("--json", action="store_true", help="print one JSON document")
    serve = commands.add_parser("serve", help="serve feature groups over HTTP")
    serve.add_argument("file")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--cache-ttl", type=float, default=1.0, metavar="SECONDS")
    serve.add_argument("--monitor-every", type=float, default=60.0, metavar="SECONDS")


async def features(t: Topology, db: AsyncDatabase[Any], args: argparse.Namespace) -> Any:
    """`list`: every registered (group, version) in the topology's database; `describe`:
    the topology's own group with its freshness and drift; `baseline`: record one."""
    from tidemark.features.drift import record_baseline

    infos = registered(await db[FEATURE_GROUPS].find().to_list(None))
    if args.action == "list":
        return [
            {
                "group": i.group,
                "version": i.version,
                "entity": i.entity,
                "features": ", ".join(i.features),
                "topology": i.topology,
                "source_topic": i.source_topic,
            }
            for i in sorted(infos.values(), key=lambda i: (i.group, i.version))
        ]
    own = GroupInfo.of(_with_features(t))
    info = infos.get((own.group, own.version))
    if args.action == "baseline":
        if info is None:
            raise OperationError(f"{group_id(own.group, own.version)} is not materialized yet")
        return {"group": own.group, "version": own.version, **await record_baseline(db, info)}
    if info is None:
        return {**own.describe(), "registered": False}
    return {**info.describe(), "registered": True, **await group_status(db, info)}


async def group_status(db: AsyncDatabase[Any], info: GroupInfo) -> dict[str, Any]:
    """Freshness against the SLA, and drift against the baseline if one was recorded."""
    # SciPy and NumPy load in a second: only the commands that report drift import them.
    from tidemark.features.drift import drift, freshness, sample

    fresh = await freshness(db, info)
    lag = fresh["lag_max_s"]
    sla_ok = None if info.freshness_sla is None or lag is None else lag <= info.freshness_sla
    drifted = drift(info, await sample(db, info)) if info.baseline else {}
    return {**fresh, "freshness_sla_s": info.freshness_sla, "sla_ok": sla_ok, "drift": drifted}


def _with_features(t: Topology) -> Topology:
    if t.feature_group is None:
        raise OperationError(f"topology {t.name!r} has no features sink")
    return t


def serve(t: Topology, args: argparse.Namespace) -> int:
    """Run the HTTP app until interrupted."""
    import uvicorn

    from tidemark.features.http import create_app

    client = AsyncFeatureClient(
        t.mongo.uri, t.mongo.database, cache_ttl=args.cache_ttl, **t.mongo.client_args()
    )
    app = create_app(client, args.monitor_every)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
