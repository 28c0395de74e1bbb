"""Helpers shared by tests: service addresses and bounded waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Services:
    """Addresses of the real services the integration tests talk to."""

    kafka: str
    mongo_uri: str


TopicFactory = Callable[..., str]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail saying `what` did not happen within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


async def wait_until_async(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: str
) -> None:
    """Async `wait_until`."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
