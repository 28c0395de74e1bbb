"""Progress bars of long operations (replay, restore): tqdm on stderr, only on a terminal."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(total: int, desc: str, enabled: bool | None = None) -> Any:
    """Rows, rate and ETA; `enabled=None` shows it only when stderr is a terminal."""
    return tqdm(
        total=total,
        unit="rec",
        unit_scale=True,
        desc=desc,
        disable=None if enabled is None else not enabled,
        mininterval=0.5,
    )
