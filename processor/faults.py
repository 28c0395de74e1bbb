"""Crash on purpose between the steps of the commit protocol, for the tests that prove it.

`TIDEMARK_FAULT="after_state_flush:n=3"` kills the process with SIGKILL the 3rd time that
point is reached; `:p=0.1` kills with that probability each time. Several specs may be given,
separated by commas. Unset, every check is a dictionary miss.
"""

from __future__ import annotations

import os
import random
import signal
from dataclasses import dataclass

POINTS = ("after_kafka_commit", "after_state_flush", "after_checkpoint")


@dataclass
class _Rule:
    count: int | None
    probability: float | None
    hits: int = 0


def _parse(spec: str) -> dict[str, _Rule]:
    rules: dict[str, _Rule] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, _, arg = part.partition(":")
        if point not in POINTS:
            raise ValueError(
                f"TIDEMARK_FAULT: unknown point {point!r} (known: {', '.join(POINTS)})"
            )
        name, _, number = arg.partition("=")
        if name == "n":
            rules[point] = _Rule(count=int(number), probability=None)
        elif name == "p":
            rules[point] = _Rule(count=None, probability=float(number))
        else:
            rules[point] = _Rule(count=1, probability=None)
    return rules


_RULES = _parse(os.environ.get("TIDEMARK_FAULT", ""))


def point(name: str) -> None:
    """Die here if a fault is armed for `name`."""
    rule = _RULES.get(name)
    if rule is None:
        return
    rule.hits += 1
    if (rule.count is not None and rule.hits >= rule.count) or (
        rule.probability is not None and random.random() < rule.probability
    ):
        os.kill(os.getpid(), signal.SIGKILL)
