"""Taking a partition: a new epoch, then where to read from and from where to emit.

W is the checkpoint in MongoDB, C the committed offset in Kafka. Reading resumes at W;
records in [W, C) rebuild state only (their outputs are committed already), and one whose
key already carries `off >= offset` is skipped (a partial flush got there first).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from tidemark.config import Topology, faults
from tidemark.features.materialize import FeatureBuffer
from tidemark.processor.kafka.positions import Positions
from tidemark.processor.protocol.partition import Partition, Phase
from tidemark.processor.protocol.snapshotting import Snapshotter
from tidemark.state import Checkpoint, Checkpoints, Fenced, PartitionStore


def new_partition(
    topology: Topology,
    collection: AsyncCollection[Any],
    stateful_ids: list[str],
    cp: Checkpoint,
    *,
    emit_from: int,
    cut_from: int,
    commit_floor: int = 0,
) -> Partition:
    """A `Partition` over its state store, for the worker and the replay alike."""
    t = topology
    store = PartitionStore(
        collection,
        cp.partition,
        t.state.cache_entries,
        t.state.flush_statements,
        cp.floor,
        base=cp.offset,  # W: stream times are read as of here
    )
    return Partition(
        checkpoint=cp,
        store=store,
        states={op: store.view(op) for op in stateful_ids},
        emit_from=emit_from,
        cut_from=cut_from,
        commit_floor=commit_floor,
        phase=Phase.FAILED if cp.status == "failed" else Phase.RECOVERING,
        features=FeatureBuffer(keep_all=bool(t.feature_group and t.feature_group.history)),
    )


async def recover(
    topology: Topology,
    checkpoints: Checkpoints,
    collection: AsyncCollection[Any],
    stateful_ids: list[str],
    snapshotter: Snapshotter,
    number: int,
    owner: str,
    kafka: Positions,
) -> Partition | None:
    """Take partition `number` as `owner`; None if an operator holds it (leave it alone)."""
    faults.point("acquire")
    cp = await checkpoints.acquire(topology.source.topic, number, owner)
    if cp is None:
        return None
    if cp.offset is None:
        # First owner ever: pin where processing starts, so that a crash before the first
        # state checkpoint replays from here and not from Kafka's committed offset.
        first = kafka.first_start(topology.source.start)
        try:
            await checkpoints.advance(cp, first)
        except Fenced:
            return None  # taken by an operator or a newer member meanwhile
        cp = dataclasses.replace(cp, offset=first, clean=True)
    assert cp.offset is not None
    emit_from = max(cp.offset, kafka.committed or 0)
    part = new_partition(
        topology,
        collection,
        stateful_ids,
        cp,
        emit_from=emit_from,
        cut_from=cp.offset if cp.clean else emit_from,
    )
    await snapshotter.adopt(part)
    return part
