"""One owned partition's lifecycle: the only place its offsets and checkpoint live.

    acquire ─▶ RECOVERING ─▶ RUNNING ─▶ FAILED
                   │            │          │
                   └────────────┴──────────┴─▶ HANDED_OFF (paused for an operator)
                                               DROPPED    (fenced, revoked or lost)

A `Partition` lives for one epoch: recovery creates it, and a hand-back or a rebalance
creates a new one with a new epoch. The offsets it owns:

- W, `checkpoint.offset`: where the state in MongoDB is complete up to (next to read).
- C, `emit_from`: Kafka's committed offset at assignment; outputs below it were committed
  before, so [W, C) is re-applied for state only.
- `cut_from`: no state checkpoint below this offset, so RECOVERING ends there. After a
  crash a partial flush may have moved keys past W up to C, and a cut in between would not
  be consistent; when the last owner left cleanly (`checkpoint.clean`) it is W.
- `position`: one past the last record processed. Kafka's committed offset is moved to
  `max(position, emit_from, commit_floor)`, never back.

The checkpoint copy is changed field by field (`note`), after the write that changed it:
never replaced by a copy taken before an await.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tidemark.config.state import State
from tidemark.features.materialize import FeatureBuffer
from tidemark.state import Checkpoint, PartitionStore


class Phase(StrEnum):
    RECOVERING = "recovering"  # re-applying [W, cut_from): outputs below C suppressed
    RUNNING = "running"
    FAILED = "failed"  # stopped on poison records; paused until a replay repairs it
    HANDED_OFF = "handed_off"  # paused at a committed point for an operator
    DROPPED = "dropped"  # a newer epoch took it, or the group revoked it


_NEXT = {
    Phase.RECOVERING: {Phase.RUNNING, Phase.FAILED, Phase.HANDED_OFF, Phase.DROPPED},
    Phase.RUNNING: {Phase.FAILED, Phase.HANDED_OFF, Phase.DROPPED},
    Phase.FAILED: {Phase.HANDED_OFF, Phase.DROPPED},
    Phase.HANDED_OFF: set(),
    Phase.DROPPED: set(),
}


class PhaseError(AssertionError):
    """A transition the lifecycle does not allow: a bug."""


@dataclass(eq=False)
class Partition:
    """Ownership, offsets, state and progress of one partition for one epoch."""

    checkpoint: Checkpoint
    store: PartitionStore
    states: dict[str, State]
    emit_from: int
    cut_from: int
    commit_floor: int = 0
    phase: Phase = Phase.RECOVERING
    position: int | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    dead_letters: int = 0  # produced since the last state checkpoint took the count
    # Snapshots and the changelog (`snapshotting.py`).
    last_snapshot: float = 0.0  # monotonic time of the last snapshot
    records_since_snapshot: int = 0
    snapshot_due: bool = False
    answered: set[str] = field(default_factory=set)  # snapshot requests served
    changelog_from: int | None = None
    changelog_rebuild: bool = False
    features: FeatureBuffer = field(default_factory=FeatureBuffer)  # rows since the commit

    def __post_init__(self) -> None:
        if self.phase is Phase.RECOVERING and self.checkpoint.offset is not None:
            self._leave_recovery(self.checkpoint.offset)

    @property
    def number(self) -> int:
        return self.checkpoint.partition

    @property
    def epoch(self) -> int:
        return self.checkpoint.epoch

    @property
    def owned(self) -> bool:
        """Still ours: processing, recovering or failed (its failure still ours to record)."""
        return self.phase in (Phase.RECOVERING, Phase.RUNNING, Phase.FAILED)

    @property
    def processing(self) -> bool:
        return self.phase in (Phase.RECOVERING, Phase.RUNNING)

    def move(self, phase: Phase) -> None:
        if phase not in _NEXT[self.phase]:
            raise PhaseError(f"partition {self.number}: {self.phase} -> {phase}")
        self.phase = phase
        if phase in (Phase.HANDED_OFF, Phase.DROPPED):
            self.store.forget()

    def processed(self, position: int) -> None:
        """Records up to `position` (exclusive) are applied."""
        self.position = position
        if self.phase is Phase.RECOVERING:
            self._leave_recovery(position)

    def _leave_recovery(self, position: int) -> None:
        if position >= self.cut_from:
            self.phase = Phase.RUNNING

    def note(self, **fields: Any) -> None:
        """Update the checkpoint copy after the write that changed these fields."""
        self.checkpoint = dataclasses.replace(self.checkpoint, **fields)

    @property
    def snapshot_request(self) -> str | None:
        request = self.checkpoint.snapshot_request
        return request if request not in self.answered else None

    def kafka_offset(self) -> int | None:
        """What the commit moves C to: never below C, never below the replay's floor."""
        if self.position is None:
            return None
        return max(self.position, self.emit_from, self.commit_floor)

    def checkpointable(self) -> bool:
        """A state checkpoint may cut at the position: it is past `cut_from` (see the
        module docstring), so no key can hold a later record than the cut."""
        if self.phase is Phase.RUNNING:
            return True
        return self.phase is Phase.FAILED and (self.position or 0) >= self.cut_from

    def pending(self) -> bool:
        """Progress, a failure or a snapshot request waits to be committed."""
        if self.snapshot_request is not None and self.checkpointable():
            return True
        if self.phase is Phase.FAILED and not self.checkpointable():
            # Failed while recovering: only the failure is recorded (at W), once.
            return self.checkpoint.status != "failed"
        return self.position is not None and (
            self.position != self.checkpoint.offset
            or (self.phase is Phase.FAILED and self.checkpoint.status != "failed")
        )

    def cut_offset(self) -> int | None:
        """The checkpoint a state checkpoint taken now moves W to."""
        return self.position if self.position is not None else self.checkpoint.offset
