"""Riding out a MongoDB outage: retry idempotent operations on connection errors, with backoff.

Every write the runtime retries is idempotent (epoch-conditional upserts of fixed values,
checkpoint moves to a fixed offset), so a retry after an unknown outcome is safe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import AutoReconnect, BulkWriteError, ConnectionFailure, NetworkTimeout
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from tidemark.config import faults
from tidemark.config.errors import TidemarkError

T = TypeVar("T")
log = structlog.get_logger("tidemark.state")

TRANSIENT = (AutoReconnect, ConnectionFailure, NetworkTimeout)
DUPLICATE_KEY = 11000


def retriable(exc: BaseException) -> bool:
    """A dropped connection, or one of our errors that says it may succeed later."""
    return isinstance(exc, TRANSIENT) or (isinstance(exc, TidemarkError) and exc.retriable)


def _log(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("mongo_unavailable_retrying", attempt=state.attempt_number, error=str(exc))


async def with_retry(operation: Callable[[], Awaitable[T]], give_up_after: float = 300.0) -> T:
    """Run `operation`, retrying retriable errors for up to `give_up_after` s."""
    if faults.crashed():  # an in-process crash (tests): a dead process writes nothing
        raise faults.Crash("already crashed")
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(retriable),
        wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
        stop=stop_after_delay(give_up_after),
        before_sleep=_log,
        reraise=True,
    ):
        with attempt:
            return await operation()
    raise AssertionError("unreachable")  # pragma: no cover


async def insert_all(coll: AsyncCollection[Any], docs: list[dict[str, Any]]) -> None:
    """`insert_many`, retried like the rest; a retry after an unknown outcome finds the
    documents of the first attempt already there, which is success, not a duplicate."""

    async def attempt() -> None:
        try:
            await coll.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or [{}]
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise

    await with_retry(attempt)
