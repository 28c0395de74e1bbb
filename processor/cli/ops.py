"""What the operations commands do: status, snapshots, state lookups.

Each function returns plain data (the `--json` document); `commands.py` renders it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config import Topology
from tidemark.config.errors import TidemarkError
from tidemark.processor.coordination.handoff import (
    OwnerTimeout,
    await_owner,
    give_back,
    operator_name,
    take_over,
)
from tidemark.processor.kafka.positions import source_positions
from tidemark.processor.kafka.topics import partition_counts
from tidemark.processor.observability.progress import progress_bar
from tidemark.processor.runtime.control import liveness
from tidemark.state import Checkpoint, Checkpoints
from tidemark.state.names import state_collection
from tidemark.state.snapshots import LISTED, SNAPSHOTS, Manifest, Snapshots

Row = dict[str, Any]


class OperationError(TidemarkError):
    """The operation cannot be done as asked; nothing was changed."""


async def status(topology: Topology, db: AsyncDatabase[Any]) -> list[Row]:
    """One row per source partition: progress, ownership, health, snapshots."""
    t = topology
    count = (await asyncio.to_thread(partition_counts, t, [t.source.topic])).get(t.source.topic)
    if count is None:
        raise OperationError(f"source topic {t.source.topic!r} does not exist")
    view = await asyncio.to_thread(source_positions, t, list(range(count)))
    docs = {d["partition"]: d for d in await Checkpoints(db, t.name).all()}
    within = liveness(t)
    latest: dict[int, Manifest] = {}
    async for doc in db[SNAPSHOTS].find({"topology": t.name, **LISTED}).sort("version", 1):
        latest[doc["partition"]] = Manifest.from_doc(doc)
    rows = []
    for p in range(count):
        doc = docs.get(p, {})
        low, high, committed = view[p].low, view[p].high, view[p].committed
        checkpoint = doc.get("offset")
        done = committed if committed is not None else (checkpoint or low)
        snapshot = latest.get(p)
        owner = Checkpoint.from_doc(doc).live_owner(within) if doc else None
        rows.append(
            {
                "partition": p,
                "checkpoint": checkpoint,
                "committed": committed,
                "log_end": high,
                "lag": max(0, high - done),
                "epoch": doc.get("epoch", 0),
                "owner": owner,
                "status": _status(doc.get("status"), owner),
                "snapshot": snapshot.version if snapshot else None,
                "snapshot_age_s": round(snapshot.age(), 1) if snapshot else None,
                "dead_letters": doc.get("dead_letters", 0),
                "error": doc.get("error"),
            }
        )
    return rows


def _status(stored: str | None, owner: str | None) -> str:
    if stored in ("failed", "replaying", "paused"):
        return stored
    return "running" if owner else "unowned"


def manifest_row(m: Manifest, current_hash: str) -> Row:
    return {
        "partition": m.partition,
        "version": m.version,
        "kind": m.kind,
        "offset": m.offset,
        "keys": m.keys,
        "bytes": m.bytes,
        "created_at": m.created_at.isoformat(),
        "age_s": round(m.age(), 1),
        "topology_hash": m.topology_hash,
        "same_topology": m.topology_hash == current_hash,
    }


async def snapshot_list(topology: Topology, db: AsyncDatabase[Any], partition: int) -> list[Row]:
    snapshots = Snapshots(db, topology.name)
    found = await snapshots.versions(partition)
    return [manifest_row(m, topology.semantic_hash()) for m in found]


async def snapshot_take(
    topology: Topology, db: AsyncDatabase[Any], partition: int, timeout: float = 120.0
) -> Row:
    """Ask the owner for a snapshot at its next state checkpoint; take it here if unowned."""
    t = topology
    checkpoints = Checkpoints(db, t.name)
    started = time.monotonic()
    manifest = await _take_by_owner(t, db, checkpoints, partition, timeout)
    if manifest is None:
        manifest = await _take_offline(t, db, checkpoints, partition)
    return {**manifest_row(manifest, t.semantic_hash()), "seconds": _since(started)}


async def _take_by_owner(
    topology: Topology,
    db: AsyncDatabase[Any],
    checkpoints: Checkpoints,
    partition: int,
    timeout: float,
) -> Manifest | None:
    """The snapshot the live owner took on request; None if there is no live owner."""
    topic = topology.source.topic
    cp = await checkpoints.get(topic, partition)
    if cp is None:
        raise OperationError(f"partition {partition} has never been processed")
    if cp.held or cp.live_owner(liveness(topology)) is None:
        return None
    request = await checkpoints.request_snapshot(topic, partition)
    try:
        answered = await await_owner(
            topology,
            checkpoints,
            partition,
            lambda doc: doc.get("snapshot_answered") == request,
            timeout,
        )
    except OwnerTimeout as exc:
        raise OperationError(f"no snapshot taken: {exc}") from None
    return await Snapshots(db, topology.name).get(partition) if answered else None


async def _take_offline(
    topology: Topology, db: AsyncDatabase[Any], checkpoints: Checkpoints, partition: int
) -> Manifest:
    cp, previous = await take_over(
        topology, checkpoints, partition, "paused", operator_name("snapshot")
    )
    try:
        if cp.offset is None:
            raise OperationError(f"partition {partition} has no checkpoint offset yet")
        state = db[state_collection(topology.name)]
        beyond = {"p": partition, "off": {"$gte": cp.offset}, "ep": {"$gte": cp.floor}}
        if found := await state.count_documents(beyond):
            raise OperationError(
                f"partition {partition} was left mid-checkpoint by a crash ({found} keys past "
                f"offset {cp.offset}); start a worker (it repairs this) and take the snapshot then"
            )

        async def publish(version: int) -> None:
            # A fenced owner that never acknowledged may still have flushed meanwhile.
            if await state.count_documents(beyond):
                raise OperationError(f"partition {partition} changed while read; try again")
            await checkpoints.snapshot_taken(cp, version)

        snapshots = Snapshots(db, topology.name, topology.snapshots.chunk_bytes)
        return await snapshots.take(
            partition, cp.offset, topology.semantic_hash(), publish, "full", cp.floor
        )
    finally:
        # Clean only if the owner said so when it let go (see `Checkpoint.clean`).
        await give_back(checkpoints, cp, previous, clean=cp.clean)


async def snapshot_restore(
    topology: Topology,
    db: AsyncDatabase[Any],
    partition: int,
    version: int | None,
    progress: bool | None = None,
) -> Row:
    """Set the partition's state and checkpoint to a version; its owner resumes from there.

    The owner then re-applies [snapshot offset, C) for state only, so outputs are not
    repeated. Every checksum is verified before the partition is touched.
    """
    t = topology
    checkpoints = Checkpoints(db, t.name)
    snapshots = Snapshots(db, t.name, t.snapshots.chunk_bytes)
    manifest = await snapshots.get(partition, version)
    started = time.monotonic()
    await snapshots.verify(manifest)
    cp, previous = await take_over(t, checkpoints, partition, "paused", operator_name("restore"))
    try:
        # Older documents are void from here: a zombie's write after the clear is ignored.
        await checkpoints.raise_floor(cp)
        with progress_bar(manifest.keys, f"restore partition {partition}", progress) as bar:
            keys = await snapshots.restore(manifest, cp.epoch, bar.update)
        await checkpoints.advance(cp, manifest.offset)
        if t.snapshots.mode == "incremental":
            await checkpoints.changelog_reaches(cp, manifest.offset)
    except BaseException as exc:  # interrupted too: hand it back as failed, saying why
        await give_back(checkpoints, cp, "failed", f"restore failed: {exc}"[:2000])
        raise
    # Restored state is a consistent cut at the checkpoint: the owner re-applies [W, C)
    # with state checkpoints from its first record, its memory bounded as usual.
    await give_back(checkpoints, cp, "running", clean=True)
    return {
        **manifest_row(manifest, t.semantic_hash()),
        "restored_keys": keys,
        "seconds": _since(started),
        "previous_status": previous,
    }


async def snapshot_prune(topology: Topology, db: AsyncDatabase[Any], partition: int) -> Row:
    """Apply the retention policy now. No hand-off: pruning commutes with the owner's own
    snapshots (it never removes the newest version, nor the chunks of one being written)."""
    policy = topology.snapshots
    snapshots = Snapshots(db, topology.name)
    removed = await snapshots.prune(partition, policy.retain, policy.max_age)
    kept = [m.version for m in await snapshots.versions(partition)]
    return {"partition": partition, "removed": removed, "kept": kept}


async def state_get(
    topology: Topology,
    db: AsyncDatabase[Any],
    operator: str,
    key: str,
    partition: int | None,
    as_of: int | None,
) -> list[Row]:
    """The value of one key (per partition holding it), now or at a retained checkpoint."""
    t = topology
    flt: dict[str, Any] = {"op": operator, "k": key}
    if partition is not None:
        flt["p"] = partition
    stored = {d["partition"]: d for d in await Checkpoints(db, t.name).all()}
    docs = [
        d
        for d in await db[state_collection(t.name)].find(flt).to_list(None)
        if d.get("ep", 0) >= stored.get(d["p"], {}).get("floor", 0)  # older ones are void
    ]
    if as_of is None:
        checkpoints = {p: d.get("offset") for p, d in stored.items()}
        return [
            {
                "operator": operator,
                "key": key,
                "partition": d["p"],
                "value": None if d.get("del") else d.get("v"),
                "offset": d.get("off"),
                "checkpoint": checkpoints.get(d["p"]),
            }
            for d in docs
        ]
    partitions = [partition] if partition is not None else sorted({d["p"] for d in docs})
    if not partitions:
        raise OperationError(f"{operator}:{key} is in no partition now; name one with --partition")
    return [await _as_of(t, db, operator, key, p, as_of) for p in partitions]


async def _as_of(
    topology: Topology, db: AsyncDatabase[Any], operator: str, key: str, partition: int, at: int
) -> Row:
    snapshots = Snapshots(db, topology.name)
    bases = [m for m in await snapshots.versions(partition) if m.kind == "full" and m.offset <= at]
    if not bases:
        raise OperationError(
            f"partition {partition}: no retained snapshot at or before offset {at}"
        )
    base = bases[-1]
    chain = await snapshots.changelog.reach(partition, base.offset, at)
    reached = chain[-1].end if chain else base.offset
    found = await snapshots.changelog.find(partition, base.offset, reached, operator, key)
    if found is None:
        async for record in snapshots.records(base):
            if record[0] == operator and record[1] == key:
                found = record
                break
    return {
        "operator": operator,
        "key": key,
        "partition": partition,
        "value": found[2] if found else None,
        "offset": found[3] if found else None,
        "checkpoint": reached,
    }


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
