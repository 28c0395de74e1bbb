"""Stream time per (operator, partition), stored so recovery sees it as of W.

Windows decide lateness and closing by stream time (the largest event time seen), so a
recovery that re-applies [W, C) must start from the stream time at W, not a later one: a
record that was on time must not look late because a later record had raised the clock.
The clock is one state document, written by the flush of each state checkpoint whose
stream time changed, holding the value at that cut and the one it replaces:

    {at: X, t: st(X), prev_at: Y, prev_t: st(Y)}

Flushes run one at a time and W moves to X right after its flush, so the document is
either the newest cut at or before W, or the cut after W (flushed, W not moved yet) whose
`prev` is at or before W. Snapshots and the changelog carry it like any key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidemark.config.state import NO_TIME
from tidemark.state.errors import StateError

CLOCK_KEY = "~clock"  # operators that keep a clock prefix every key of theirs, so no clash


@dataclass
class StreamClock:
    """An operator's stream time in one partition and what was last stored of it."""

    millis: int
    stored_at: int | None = None
    stored: int = NO_TIME

    @classmethod
    def resolve(cls, doc: Any, base: int | None, name: str) -> StreamClock:
        """The clock as of offset `base` (W) from its stored document (None: never stored)."""
        if not isinstance(doc, dict):
            return cls(NO_TIME)
        at, prev_at = doc.get("at"), doc.get("prev_at")
        if base is None or (isinstance(at, int) and at <= base):
            return cls(int(doc["t"]), at, int(doc["t"]))
        if isinstance(prev_at, int) and prev_at <= base:
            return cls(int(doc["prev_t"]), prev_at, int(doc["prev_t"]))
        if prev_at is None:
            return cls(NO_TIME)  # the first write is past W: nothing was stored at W
        raise StateError(f"{name}: no stream time stored at or before offset {base}")

    def to_store(self, cut: int) -> dict[str, Any] | None:
        """The document to write with the checkpoint at `cut`, or None if unchanged."""
        if self.millis == self.stored:
            return None
        doc = {"at": cut, "t": self.millis, "prev_at": self.stored_at, "prev_t": self.stored}
        self.stored_at, self.stored = cut, self.millis
        return doc
