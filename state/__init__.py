"""MongoDB: per-partition operator state, checkpoints with epoch fencing, snapshots and the
changelog, collection bootstrap."""

from state.bootstrap import ensure_collections
from state.checkpoints import Checkpoint, Checkpoints
from state.errors import Fenced, StateError
from state.store import PartitionStore

__all__ = [
    "Checkpoint",
    "Checkpoints",
    "Fenced",
    "PartitionStore",
    "StateError",
    "ensure_collections",
]
