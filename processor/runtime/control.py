"""How a worker answers operators: hand-offs, hand-backs and snapshot requests.

Operators talk to the owner of a partition through its checkpoint document, which the
worker reads once per `checkpoint.interval` for every partition it is assigned:

- `status: replaying|paused` with an unacknowledged hand-off: pause the partition, commit
  everything (Kafka transaction, state flush, checkpoint), then acknowledge. From then on
  the worker neither reads nor writes the partition, so the operator can fence it and read
  C knowing no commit of ours is in flight.
- back to `running` (or out of `failed`) for a partition the worker holds: the operator
  handed it back; recover it like a new assignment (new epoch, read from the checkpoint).
- `snapshot_request`: the owner takes a snapshot at its next state checkpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import structlog

from tidemark.state import Checkpoints
from tidemark.state.names import checkpoint_id

if TYPE_CHECKING:
    from tidemark.processor.runtime.worker import Worker

log = structlog.get_logger("tidemark.control")


class Control:
    """Reads the checkpoint documents of a worker's partitions and acts on what they say."""

    def __init__(self, worker: Worker, checkpoints: Checkpoints) -> None:
        self._worker = worker
        self._checkpoints = checkpoints

    async def poll(self) -> None:
        w = self._worker
        ids = self._ids()
        if not ids:
            return
        current = await self._checkpoints.current(list(ids))
        handed_back = []
        for cid, number in ids.items():
            cp = current.get(cid)
            if cp is None:
                continue
            part = w.parts.get(number)
            if cp.held:
                if part is None:
                    w.held.add(number)
                if not cp.acked and cp.handoff is not None:
                    if part is not None:
                        await self._hand_off(number)
                    await self._checkpoints.ack_handoff(cid, cp.handoff)
                    log.info("handoff_acknowledged", partition=number, handoff=cp.handoff)
            elif number in w.held and cp.status == "running" and cp.owner in (None, w.owner):
                # Given back by the operator (it unsets the owner). Not when another group
                # member acquired it: then this worker is the stale one.
                handed_back.append(number)
            elif part is not None and cp.epoch == part.checkpoint.epoch:
                part.checkpoint = dataclasses.replace(
                    part.checkpoint, snapshot_request=cp.snapshot_request
                )
        if handed_back:
            log.info("partitions_handed_back", partitions=handed_back)
            await w.restart(handed_back)

    async def heartbeat_forever(self) -> None:
        """Stamp `seen_at` every interval, beside the loop, so that an owner busy in a long
        commit still counts as alive to operators waiting for its acknowledgement."""
        while True:
            ids = self._ids()
            if ids:
                await self._checkpoints.heartbeat(list(ids), self._worker.owner)
            await asyncio.sleep(self._worker.topology.checkpoint.interval)

    def _ids(self) -> dict[str, int]:
        t = self._worker.topology
        return {checkpoint_id(t.name, t.source.topic, n): n for n in sorted(self._worker.assigned)}

    async def _hand_off(self, number: int) -> None:
        """Pause at a committed point: everything processed is committed and checkpointed."""
        w = self._worker
        w.pause(number)
        await w.commit(w.committer.commit_all)
        part = w.parts.get(number)
        if part is not None:
            w.forget(part)
        w.held.add(number)
        log.info("partition_handed_off", partition=number)
