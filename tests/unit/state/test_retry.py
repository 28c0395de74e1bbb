"""The retry helper reads `TidemarkError.retriable` and gives up after the caller's budget."""

from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect

from tidemark.config.errors import TidemarkError
from tidemark.state.retry import MongoUnavailable, retry_budget, with_retry


class Flaky(TidemarkError):
    retriable = True


async def test_a_retriable_error_is_retried_and_others_are_not() -> None:
    calls: list[int] = []

    async def twice_flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky("try again")
        return "done"

    with retry_budget(10):
        assert await with_retry(twice_flaky) == "done"
    assert len(calls) == 3

    async def broken() -> str:
        calls.append(1)
        raise TidemarkError("retrying cannot help")

    calls.clear()
    with pytest.raises(TidemarkError, match="cannot help"):
        await with_retry(broken)
    assert len(calls) == 1


async def test_past_the_budget_a_dropped_connection_becomes_mongo_unavailable() -> None:
    calls: list[int] = []

    async def down() -> None:
        calls.append(1)
        raise AutoReconnect("connection refused")

    with retry_budget(0.5), pytest.raises(MongoUnavailable) as caught:
        await with_retry(down)
    assert caught.value.retriable
    assert isinstance(caught.value.__cause__, AutoReconnect)
    assert len(calls) >= 2  # retried with backoff before giving up
