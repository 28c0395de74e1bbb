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

import dataclasses
from typing import TYPE_CHECKING

import structlog

from state import Checkpoints
from state.names import checkpoint_id

if TYPE_CHECKING:
    from processor.worker import Worker

log = structlog.get_logger("tidemark.control")


class Control:
    """Reads the checkpoint documents of a worker's partitions and acts on what they say."""

    def __init__(self, worker: Worker, checkpoints: Checkpoints) -> None:
        self._worker = worker
        self._checkpoints = checkpoints

    async def poll(self) -> None:
        w = self._worker
        t = w.topology
        ids = {checkpoint_id(t.name, t.source.topic, n): n for n in sorted(w.assigned)}
        if not ids:
            return
        current = await self._checkpoints.current(list(ids))
        await self._checkpoints.heartbeat(list(current), w.owner)
        handed_back = []
        for cid, number in ids.items():
            cp = current.get(cid)
            if cp is None:
                continue
            part = w.parts.get(number)
            if cp.held:
                if not cp.acked and cp.handoff is not None:
                    if part is not None:
                        await self._hand_off(number)
                    await self._checkpoints.ack_handoff(cid, cp.handoff)
                    log.info("handoff_acknowledged", partition=number, handoff=cp.handoff)
            elif number in w.held and cp.status == "running":
                handed_back.append(number)
            elif part is not None and cp.epoch == part.checkpoint.epoch:
                part.checkpoint = dataclasses.replace(
                    part.checkpoint, snapshot_request=cp.snapshot_request
                )
        if handed_back:
            log.info("partitions_handed_back", partitions=handed_back)
            await w.restart(handed_back)

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
