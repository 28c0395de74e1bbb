"""Durations written as `500ms`, `1s`, `5m`, `2h`, `7d`."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_SECONDS = 366 * 86400.0  # longer is a typo, and would overflow the clocks it feeds
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: object) -> float:
    """Seconds in a duration string; plain numbers are seconds."""
    try:
        if isinstance(text, int | float) and not isinstance(text, bool):
            seconds = float(text)
        elif isinstance(text, str) and (match := _PATTERN.match(text)):
            seconds = float(match[1]) * _UNITS[match[2]]
        else:
            raise ValueError(
                f"invalid duration {str(text)[:40]!r}: use a number and a unit, e.g. 500ms, 1s, 5m"
            )
    except OverflowError:
        seconds = float("inf")
    if not 0 < seconds <= MAX_SECONDS:  # NaN fails this too
        raise ValueError(f"duration must be positive and at most 366d, got {str(text)[:40]!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
