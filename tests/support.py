"""Helpers shared by tests: service addresses and bounded waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic


@dataclass(frozen=True)
class Services:
    """Addresses of the real services the integration tests talk to."""

    kafka: str
    mongo_uri: str


class Topics:
    """Topics a test created or that its workers created for it; all deleted at the end."""

    def __init__(self, admin: AdminClient, unique_name: Callable[[str], str]) -> None:
        self._admin = admin
        self._unique = unique_name
        self._names: list[str] = []

    def __call__(self, base: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = self._unique(base)
        topic = NewTopic(name, partitions, 1, config=config or {})
        self._admin.create_topics([topic])[name].result(timeout=30)
        self._names.append(name)
        return name

    def adopt(self, name: str) -> None:
        """Delete `name` at the end too (a dead-letter topic a worker created)."""
        self._names.append(name)

    def delete_all(self) -> None:
        existing = self._admin.list_topics(timeout=10).topics
        names = [n for n in self._names if n in existing]
        for future in self._admin.delete_topics(names).values() if names else []:
            future.result(timeout=30)


TopicFactory = Topics


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
