"""Riding out a MongoDB outage: retry idempotent operations on connection errors, with backoff.

Every write the runtime retries is idempotent (epoch-conditional upserts of fixed values,
checkpoint moves to a fixed offset), so a retry after an unknown outcome is safe.

How long an operation keeps retrying is the caller's budget (`retry_budget`): the operations
commands run retry for minutes; a worker retries only for a fraction of its Kafka
transaction's timeout, then gets `MongoUnavailable`, ends its transaction and waits for
MongoDB with nothing open (`processor/runtime/outages.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import structlog
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import AutoReconnect, BulkWriteError, ConnectionFailure, NetworkTimeout
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from tidemark.config import faults
from tidemark.config.errors import TidemarkError
from tidemark.config.throttle import Throttle

T = TypeVar("T")
log = structlog.get_logger("tidemark.state")

TRANSIENT = (AutoReconnect, ConnectionFailure, NetworkTimeout)
DUPLICATE_KEY = 11000
DEFAULT_BUDGET = 300.0
_budget: ContextVar[float] = ContextVar("tidemark_retry_budget", default=DEFAULT_BUDGET)
_throttle = Throttle()


class MongoUnavailable(TidemarkError):
    """MongoDB did not answer within the retry budget; it may later."""

    retriable = True


@contextmanager
def retry_budget(seconds: float) -> Iterator[None]:
    """Within this block (and tasks started in it), give up retrying after `seconds`."""
    token = _budget.set(seconds)
    try:
        yield
    finally:
        _budget.reset(token)


def retriable(exc: BaseException) -> bool:
    """A dropped connection, or one of our errors that says it may succeed later."""
    return isinstance(exc, TRANSIENT) or (isinstance(exc, TidemarkError) and exc.retriable)


def _log(state: RetryCallState) -> None:
    held = _throttle.allow("retrying")
    if held is not None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("mongo_unavailable_retrying", error=type(exc).__name__, held_back=held)


async def with_retry(operation: Callable[[], Awaitable[T]]) -> T:
    """Run `operation`, retrying retriable errors within the budget; then `MongoUnavailable`."""
    if faults.crashed():  # an in-process crash (tests): a dead process writes nothing
        raise faults.Crash("already crashed")
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(retriable),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            stop=stop_after_delay(_budget.get()),
            before_sleep=_log,
        ):
            with attempt:
                return await operation()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        if isinstance(last, MongoUnavailable):
            raise last from None
        raise MongoUnavailable(f"MongoDB unavailable: {type(last).__name__}") from last
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
