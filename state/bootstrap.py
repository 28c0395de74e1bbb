"""Create the indexes Tidemark relies on; idempotent, run at every worker start."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from tidemark.state.names import CHECKPOINTS, state_collection


async def ensure_collections(db: AsyncDatabase[Any], topology: str) -> None:
    """Index state by partition so one partition can be scanned, snapshotted or dropped alone."""
    await db[state_collection(topology)].create_index([("p", 1)], name="by_partition")
    await db[CHECKPOINTS].create_index([("topology", 1)], name="by_topology")
