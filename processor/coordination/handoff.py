"""The operator's side of a hand-off: take one partition from the group, give it back.

Order (docs/ARCHITECTURE.md, "Replay and hand-off"):

1. Mark the checkpoint document `replaying` or `paused` with a hand-off id.
2. If a live group member owns the partition, wait until it acknowledges: it paused the
   partition and committed everything it had processed, so no commit of its is in flight.
3. Fence: bump the epoch as the hand-off. From here any write of the old owner fails.
   Without an acknowledgement, wait `transaction.timeout.ms` plus the broker's sweep of
   expired transactions from this moment, on our own clock: an owner that passed its
   epoch check before the fence had its transaction open on the broker already (commit
   step 1), so by then it is committed or aborted.
4. ... the operation (restore, replay, snapshot) ...
5. Give back: status `running` (or `failed`), hand-off cleared; the member recovers the
   partition like a new assignment, from the checkpoint the operation left.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from tidemark.config import Topology, faults
from tidemark.config.errors import TidemarkError
from tidemark.processor.kafka.transaction import abandoned_after
from tidemark.processor.runtime.control import liveness
from tidemark.state import Checkpoint, Checkpoints, StateError
from tidemark.state.checkpoints import HandoffBusy, Status

log = structlog.get_logger("tidemark.handoff")


class OwnerTimeout(TidemarkError):
    """The partition's owner did not answer in time; nothing was changed."""


def operator_name(what: str) -> str:
    return f"{what}:{socket.gethostname()}:{os.getpid()}"


async def await_owner(
    topology: Topology,
    checkpoints: Checkpoints,
    partition: int,
    answered: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> bool:
    """Poll the partition's checkpoint document until its owner answers (True) or stops
    showing signs of life (False); `OwnerTimeout` after `timeout` seconds."""
    topic, within = topology.source.topic, liveness(topology)
    deadline = time.monotonic() + timeout
    while True:
        doc = await checkpoints.raw(topic, partition)
        if doc is None:
            raise StateError(f"partition {partition} has no checkpoint document")
        if answered(doc):
            return True
        owner = Checkpoint.from_doc(doc).live_owner(within)
        if owner is None:
            log.info("owner_gone", partition=partition)  # crashed or left
            return False
        if time.monotonic() > deadline:
            raise OwnerTimeout(
                f"partition {partition}: its owner {owner} did not answer within "
                f"{timeout:.0f}s; nothing was changed. Is the worker stuck? Stop it or retry."
            )
        await asyncio.sleep(0.2)  # polling a document: there is no change stream here


async def take_over(
    topology: Topology,
    checkpoints: Checkpoints,
    partition: int,
    status: Status,
    by: str,
    force: bool = False,
    ack_timeout: float = 60.0,
) -> tuple[Checkpoint, Status]:
    """Hold `partition` as `status`; the fenced checkpoint (our epoch) and the status to give
    it back with if the operation changes nothing."""
    topic = topology.source.topic
    before = await checkpoints.get(topic, partition)
    previous: Status = "running"
    if before is not None and before.status != "running":
        # Failed, or held by an operation that died (--force): its state may be half-done.
        previous = "failed"
    marked = await checkpoints.begin_handoff(topic, partition, status, by, force)
    acked = False
    if marked.live_owner(liveness(topology)) is not None:
        log.info("waiting_for_owner", partition=partition, owner=marked.owner)

        def answered(doc: dict[str, Any]) -> bool:
            handoff = doc.get("handoff") or {}
            if handoff.get("id") != marked.handoff:
                raise HandoffBusy(f"partition {partition}: another operation took it over")
            return bool(handoff.get("acked"))

        try:
            acked = await await_owner(topology, checkpoints, partition, answered, ack_timeout)
        except OwnerTimeout:
            await checkpoints.cancel_handoff(marked, previous)
            raise
    faults.point("fence")
    fenced = await checkpoints.acquire(topic, partition, by, handoff=marked.handoff)
    fenced_at = time.monotonic()
    if fenced is None:
        raise HandoffBusy(f"partition {partition}: another operation took it over meanwhile")
    if not acked and marked.seen_at is not None:
        # An owner that never acknowledged may still be committing; it cannot have
        # released the partition cleanly (that unsets `seen_at`).
        bound = await asyncio.to_thread(abandoned_after, topology)
        wait = fenced_at + bound + 1.0 - time.monotonic()
        log.info("waiting_for_fenced_transactions", seconds=round(wait, 1))
        await asyncio.sleep(wait)
    log.info("partition_taken", partition=partition, epoch=fenced.epoch, status=status)
    return fenced, previous


async def give_back(
    checkpoints: Checkpoints,
    cp: Checkpoint,
    status: Status,
    error: str | None = None,
    clean: bool = False,
) -> None:
    """End the hand-off; the group member assigned the partition resumes it. `clean`: the
    operation left the state a consistent cut at the checkpoint."""
    faults.point("give_back")
    await checkpoints.end_handoff(cp, status, error, clean)
    log.info("partition_given_back", partition=cp.partition, status=status)
