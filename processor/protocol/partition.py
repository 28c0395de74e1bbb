"""What a worker keeps for one partition it owns."""

from __future__ import annotations

from dataclasses import dataclass

from tidemark.config.state import State
from tidemark.state import Checkpoint, PartitionStore


@dataclass
class OwnedPartition:
    """Ownership (checkpoint and epoch), state, and progress of one assigned partition.

    `emit_from` is the Kafka committed offset C found at assignment: events below it were
    processed before a crash and their outputs committed already, so they are replayed for
    state only.
    """

    checkpoint: Checkpoint
    store: PartitionStore
    states: dict[str, State]
    emit_from: int
    next_offset: int | None = None  # one past the last event processed
    # Kafka's committed offset never moves below this: a replay that re-emits (`--emit`)
    # starts emitting below C but must not move C back.
    commit_floor: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    failed: bool = False
    dead_letters: int = 0  # produced since the last state checkpoint took the count
    last_snapshot: float = 0.0  # monotonic time of the last snapshot
    records_since_snapshot: int = 0
    snapshot_due: bool = False
    changelog_from: int | None = None  # incremental mode: checkpoint the next delta starts at
    changelog_rebuild: bool = False  # read the next delta back from MongoDB

    # No state checkpoint below this offset: after a crash, a partial flush of the old
    # owner may have moved keys past W up to C, and a cut below C would not be consistent.
    # A replay that restored or cleared the state can cut from where it starts.
    cut_from: int = 0

    @property
    def replaying(self) -> bool:
        """Still re-applying events a crashed owner had processed; no state checkpoint yet."""
        return self.next_offset is not None and self.next_offset < self.cut_from

    @property
    def number(self) -> int:
        return self.checkpoint.partition
