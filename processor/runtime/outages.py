"""Waiting out a dependency that is down, instead of dying on it.

A worker that loses MongoDB or the broker ends its Kafka transaction, lets go of what it
was processing and waits here, polling its consumer so the group keeps it, until the
dependency answers; then it recovers its partitions from their checkpoints, which is the
same path as after a crash (`Worker._ride_out`). Nothing is lost: whatever was not
committed is read again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from confluent_kafka import KafkaException
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from tidemark.config import Topology
from tidemark.config.errors import TidemarkError
from tidemark.processor.kafka.clients import transaction_timeout
from tidemark.processor.kafka.transaction import KafkaFailure, failure
from tidemark.state.retry import TRANSIENT

log = structlog.get_logger("tidemark.worker")
WINDOW = 10.0  # one "still waiting" line per this many seconds of an outage
MAX_BACKOFF = 2.0  # short enough to be back within seconds of the dependency's return


def retry_budget(topology: Topology) -> float:
    """How long a MongoDB operation of the worker retries before the worker stops and waits
    with no transaction open: well inside the transaction timeout, which started earlier."""
    return max(1.0, transaction_timeout(topology) / 3)


def recoverable(exc: BaseException) -> bool:
    """Whether a worker can wait this error out (not a bug, not refused credentials)."""
    if isinstance(exc, KafkaException):
        exc = failure("Kafka", exc)
    return isinstance(exc, TRANSIENT) or (isinstance(exc, TidemarkError) and exc.retriable)


def dependency(exc: BaseException) -> str:
    """Which dependency an error of `recoverable` came from."""
    return "kafka" if isinstance(exc, (KafkaFailure, KafkaException)) else "mongo"


def describe(exc: BaseException) -> str:
    """The error for a log line: what failed, never a client's settings or credentials."""
    if isinstance(exc, KafkaException):
        exc = failure("Kafka", exc)
    return str(exc) if isinstance(exc, TidemarkError) else type(exc).__name__


async def wait_out(
    what: str,
    attempt: Callable[[], Awaitable[None]],
    idle: Callable[[float], Awaitable[None]],
    stopping: Callable[[], bool],
) -> bool:
    """Retry `attempt` with bounded exponential backoff until it succeeds (True) or the
    worker is stopping (False); `idle(seconds)` is the pause between tries."""
    started = last_log = time.monotonic()

    async def logged() -> None:
        nonlocal last_log
        try:
            await attempt()
        except Exception as exc:
            if recoverable(exc) and time.monotonic() - last_log >= WINDOW:
                last_log = time.monotonic()
                waited = round(last_log - started, 1)
                log.warning("still_waiting", dependency=what, seconds=waited, error=describe(exc))
            raise

    try:
        async for retrying in AsyncRetrying(
            retry=retry_if_exception(recoverable),
            wait=wait_exponential_jitter(multiplier=0.2, max=MAX_BACKOFF),
            stop=lambda _: stopping(),
            sleep=idle,
            reraise=True,
        ):
            with retrying:
                await logged()
    except Exception:
        if stopping():
            return False
        raise
    return not stopping()
