"""The retry helper reads `TidemarkError.retriable`."""

from __future__ import annotations

import pytest

from tidemark.config.errors import TidemarkError
from tidemark.state.retry import with_retry


class Flaky(TidemarkError):
    retriable = True


async def test_a_retriable_error_is_retried_and_others_are_not() -> None:
    calls: list[int] = []

    async def twice_flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky("try again")
        return "done"

    assert await with_retry(twice_flaky, give_up_after=10) == "done"
    assert len(calls) == 3

    async def broken() -> str:
        calls.append(1)
        raise TidemarkError("retrying cannot help")

    calls.clear()
    with pytest.raises(TidemarkError, match="cannot help"):
        await with_retry(broken, give_up_after=10)
    assert len(calls) == 1
