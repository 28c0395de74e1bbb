"""Crash on purpose at a named step, for the tests that prove every crash point safe.

Steps call `point(name)` right before their await. Two ways to arm one:

- `TIDEMARK_FAULT="commit_transaction:n=3"` kills the process with SIGKILL the 3rd time that
  point is reached (`:p=0.1`: with that probability each time); several specs may be given,
  separated by commas. Unset, every check is a dictionary miss.
- `arm(name, n)` in a test makes the n-th hit raise `Crash` in-process instead, and every
  later hit of any point too, so nothing more is written after the "crash".
"""

from __future__ import annotations

import os
import random
import signal
from dataclasses import dataclass

# The commit protocol, in order (docs/ARCHITECTURE.md has the crash table).
COMMIT = (
    "send_offsets",
    "check_epochs",
    "commit_transaction",
    "seal",  # after an abort, before its seal (processor/kafka/hanging.py)
    "write_features",  # a commit's feature rows, before the state checkpoint that follows
    "flush_state",  # before each update command: n=2 stops a partition's flush midway
    "move_checkpoint",
    "append_changelog",
    "take_snapshot",
    "write_manifest",  # a snapshot's payload is written, its manifest not yet
    "publish_snapshot",  # its manifest is written, not yet listed
    "state_checkpoint_done",
)
# Recovery, hand-off and the operations.
OPERATIONS = (
    "acquire",
    "acknowledge",
    "fence",
    "restore_clear",  # before the state is cleared for a restore or a replay from the start
    "restore_write",  # cleared, restored records not yet written
    "give_back",
)
POINTS = COMMIT + OPERATIONS


class Crash(BaseException):
    """An in-process crash: a BaseException so that no `except Exception` survives it."""


@dataclass
class _Rule:
    count: int | None
    probability: float | None
    kill: bool = True
    hits: int = 0


def _parse(spec: str) -> dict[str, _Rule]:
    rules: dict[str, _Rule] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, arg = part.partition(":")
        if name not in POINTS:
            raise ValueError(f"TIDEMARK_FAULT: unknown point {name!r} (known: {', '.join(POINTS)})")
        kind, _, number = arg.partition("=")
        if kind == "n":
            rules[name] = _Rule(count=int(number), probability=None)
        elif kind == "p":
            rules[name] = _Rule(count=None, probability=float(number))
        else:
            rules[name] = _Rule(count=1, probability=None)
    return rules


_RULES = _parse(os.environ.get("TIDEMARK_FAULT", ""))
_crashed = False


def point(name: str) -> None:
    """Die here if a fault is armed for `name` (or an in-process crash already happened)."""
    if _crashed:
        raise Crash(f"already crashed; {name} not reached")
    rule = _RULES.get(name)
    if rule is None:
        return
    rule.hits += 1
    if (rule.count is not None and rule.hits >= rule.count) or (
        rule.probability is not None and random.random() < rule.probability
    ):
        if rule.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        _crash(name)


def _crash(name: str) -> None:
    global _crashed
    _crashed = True
    raise Crash(f"injected crash before {name}")


def arm(name: str, n: int = 1) -> None:
    """In-process: raise `Crash` at the n-th hit of `name`."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}")
    _RULES[name] = _Rule(count=n, probability=None, kill=False)


def disarm() -> None:
    """Forget in-process rules and the crash (between the runs of a test)."""
    global _crashed
    _crashed = False
    for name in [n for n, rule in _RULES.items() if not rule.kill]:
        del _RULES[name]


def crashed() -> bool:
    """Whether an in-process crash happened (callbacks must then write nothing)."""
    return _crashed
