"""How a worker hears operators: hand-offs, hand-backs and snapshot requests.

Operators talk to the owner of a partition through its checkpoint document, which the
worker reads once per `checkpoint.interval` for every partition it is assigned. `poll`
returns decisions; the worker carries them out:

- `HandOff`: `status: replaying|paused` with an unacknowledged hand-off. Pause the
  partition, commit everything (Kafka transaction, state flush, checkpoint), then
  acknowledge: from then on the worker neither reads nor writes it, so the operator can
  fence it and read C knowing no commit of ours is in flight.
- `HandBack`: back to `running` for a partition the worker holds: recover it like a new
  assignment (new epoch, read from the checkpoint).
- `SnapshotRequested`: take a snapshot at the next state checkpoint.

Beside the loop, a heartbeat stamps `owner` and `seen_at` on the documents: operators wait
for an acknowledgement only from an owner that shows a sign of life.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from tidemark.config import Topology, faults
from tidemark.processor.protocol.partition import Partition
from tidemark.processor.runtime.outages import recoverable
from tidemark.state import Checkpoints
from tidemark.state.names import checkpoint_id

log = structlog.get_logger("tidemark.control")


def liveness(topology: Topology) -> float:
    """How recent an owner's heartbeat must be for it to count as alive (it polls every
    `checkpoint.interval`; Kafka's own view of the group lags a crashed member by minutes)."""
    return max(10.0, 3 * topology.checkpoint.interval)


@dataclass(frozen=True)
class HandOff:
    number: int
    handoff: str


@dataclass(frozen=True)
class HandBack:
    number: int


@dataclass(frozen=True)
class SnapshotRequested:
    number: int
    request: str


Decision = HandOff | HandBack | SnapshotRequested


class Control:
    """Reads the checkpoint documents of a worker's partitions; says what to do about them."""

    def __init__(self, topology: Topology, checkpoints: Checkpoints, owner: str) -> None:
        self._topology = topology
        self._checkpoints = checkpoints
        self._owner = owner

    async def poll(
        self, assigned: set[int], owned: Mapping[int, Partition], held: set[int]
    ) -> list[Decision]:
        """What the documents of the `assigned` partitions ask of this worker."""
        ids = self._ids(assigned)
        if not ids:
            return []
        current = await self._checkpoints.current(list(ids))
        decisions: list[Decision] = []
        for cid, number in ids.items():
            cp = current.get(cid)
            if cp is None:
                continue
            part = owned.get(number)
            if cp.held:
                if not cp.acked and cp.handoff is not None:
                    decisions.append(HandOff(number, cp.handoff))
            elif number in held and cp.status == "running" and cp.owner in (None, self._owner):
                # Given back by the operator (it unsets the owner). Not when another group
                # member acquired it: then this worker is the stale one.
                decisions.append(HandBack(number))
            elif (
                part is not None
                and cp.epoch == part.epoch
                and cp.snapshot_request is not None
                and cp.snapshot_request != part.snapshot_request
                and cp.snapshot_request not in part.answered
            ):
                decisions.append(SnapshotRequested(number, cp.snapshot_request))
        return decisions

    async def acknowledge(self, number: int, handoff: str) -> None:
        """Tell the operator the partition is paused at a committed point."""
        faults.point("acknowledge")
        await self._checkpoints.ack_handoff(self._id(number), handoff)
        log.info("handoff_acknowledged", partition=number, handoff=handoff)

    async def heartbeat_forever(
        self, assigned: Callable[[], set[int]], alive: Callable[[float], bool]
    ) -> None:
        """Stamp `seen_at` every interval while `alive(bound)` says the processing loop
        turned within the bound: a loop that is stuck stops looking alive, even though this
        task beside it still runs (and if this task dies, the loop raises its error)."""
        interval = self._topology.checkpoint.interval
        bound = liveness(self._topology) / 2
        while True:
            ids = self._ids(assigned())
            if ids and alive(bound):
                try:
                    await self._checkpoints.heartbeat(list(ids), self._owner)
                except Exception as exc:
                    if not recoverable(exc):
                        raise
                    # MongoDB is down: the loop meets it too and waits it out; keep beating.
                    log.debug("heartbeat_failed", error=type(exc).__name__)
            await asyncio.sleep(interval)

    def _id(self, number: int) -> str:
        t = self._topology
        return checkpoint_id(t.name, t.source.topic, number)

    def _ids(self, numbers: set[int]) -> dict[str, int]:
        return {self._id(n): n for n in sorted(numbers)}
