"""A flush writes timers being set first and timers being deleted last, each group in
commands of its own, so no crash leaves a window or an expiring value without its timer."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tidemark.state import store as store_module
from tidemark.state.store import PartitionStore


async def test_timer_sets_first_then_state_then_timer_deletes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commands: list[list[str]] = []

    async def record(coll: Any, statements: list[dict[str, Any]], epoch: int, what: str) -> None:
        commands.append([s["u"]["k"] for s in statements])

    monkeypatch.setattr(store_module, "send_updates", record)
    store = PartitionStore(cast(Any, None), 0, flush_statements=2)
    view = store.view("w")
    view.put("w|a", {"n": 1}, 5)
    view.delete("t|000000000000010|old", 5)
    view.put("t|000000000000020|a", 20, 5)
    view.put("w|b", {"n": 2}, 6)
    view.put("t|000000000000030|b", 30, 6)
    await store.flush(epoch=1)
    assert commands == [
        ["t|000000000000020|a", "t|000000000000030|b"],
        ["w|a", "w|b"],
        ["t|000000000000010|old"],
    ]
