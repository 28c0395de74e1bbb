"""One log line per retry window: an outage must not flood the logs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Throttle:
    """Lets one event per key through every `window` seconds and counts the ones it held
    back, so the line that does get through can say how many it stands for."""

    window: float = 10.0
    _last: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str) -> int | None:
        """None to hold this one back; else how many of `key` were held back before it."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
