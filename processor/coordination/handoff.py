"""The operator's side of a hand-off: take one partition from the group, give it back.

Order (docs/ARCHITECTURE.md, "Replay and hand-off"):

1. Mark the checkpoint document `replaying` or `paused` with a hand-off id.
2. If a group member is assigned the partition, wait until it acknowledges: it paused the
   partition and committed everything it had processed, so no commit of its is in flight.
3. Fence: bump the epoch as the hand-off. From here any write of the old owner fails.
4. ... the operation (restore, replay, snapshot) ...
5. Give back: status `running` (or `failed`), hand-off cleared; the member recovers the
   partition like a new assignment, from the checkpoint the operation left.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time

import structlog

from tidemark.config import Topology
from tidemark.processor.kafka.clients import TRANSACTION_TIMEOUT_MS
from tidemark.state import Checkpoint, Checkpoints
from tidemark.state.checkpoints import HandoffBusy, Status

log = structlog.get_logger("tidemark.handoff")


class HandoffTimeout(Exception):
    """The partition's owner did not pause in time; nothing was changed."""


def liveness(topology: Topology) -> float:
    """How recent an owner's heartbeat must be for it to count as alive (it polls every
    `checkpoint.interval`; Kafka's own view of the group lags a crashed member by minutes)."""
    return max(10.0, 3 * topology.checkpoint.interval)


def operator_name(what: str) -> str:
    return f"{what}:{socket.gethostname()}:{os.getpid()}"


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
    acked = await _wait_for_owner(topology, checkpoints, marked, previous, ack_timeout)
    fenced = await checkpoints.acquire(topic, partition, by, handoff=marked.handoff)
    if fenced.handoff != marked.handoff:
        raise HandoffBusy(f"partition {partition}: another operation took it over meanwhile")
    if not acked and marked.seen_at is not None:
        await _outlast_transactions(topology, marked.seen_at)
    log.info("partition_taken", partition=partition, epoch=fenced.epoch, status=status)
    return fenced, previous


async def _wait_for_owner(
    topology: Topology,
    checkpoints: Checkpoints,
    marked: Checkpoint,
    previous: Status,
    timeout: float,
) -> bool:
    """Wait for the live owner's acknowledgement; False if there was none to wait for."""
    owner = marked.live_owner(liveness(topology))
    if owner is None:
        return False
    log.info("waiting_for_owner", partition=marked.partition, owner=owner)
    deadline = time.monotonic() + timeout
    while True:
        current = await checkpoints.get(marked.topic, marked.partition)
        assert current is not None
        if current.handoff != marked.handoff:
            raise HandoffBusy(f"partition {marked.partition}: another operation took it over")
        if current.acked:
            return True
        if current.live_owner(liveness(topology)) is None:
            log.info("owner_gone", partition=marked.partition, owner=owner)  # crashed or left
            return False
        if time.monotonic() > deadline:
            await checkpoints.cancel_handoff(marked, previous)
            raise HandoffTimeout(
                f"partition {marked.partition}: its owner {owner} did not pause within "
                f"{timeout:.0f}s; nothing was changed. Is the worker stuck? Stop it or retry."
            )
        await asyncio.sleep(0.2)  # polling a document: there is no change stream here


async def _outlast_transactions(topology: Topology, seen_at: dt.datetime) -> None:
    """An owner fenced without acknowledging may have passed its epoch check and still be
    committing a Kafka transaction. Once `transaction.timeout.ms` has passed since its last
    sign of life, that transaction is committed or aborted and C can be read."""
    timeout_ms = topology.kafka.producer.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
    until = seen_at + dt.timedelta(milliseconds=float(timeout_ms) + 2000)
    wait = (until - dt.datetime.now(dt.UTC)).total_seconds()
    if wait > 0:
        log.info("waiting_for_fenced_transactions", seconds=round(wait, 1))
        await asyncio.sleep(wait)


async def give_back(
    checkpoints: Checkpoints, cp: Checkpoint, status: Status, error: str | None = None
) -> None:
    """End the hand-off; the group member assigned the partition resumes it."""
    await checkpoints.end_handoff(cp, status, error)
    log.info("partition_given_back", partition=cp.partition, status=status)
