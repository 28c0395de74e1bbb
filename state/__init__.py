"""MongoDB: per-partition operator state, checkpoints with epoch fencing, snapshots and the
changelog, collection bootstrap."""

from tidemark.state.bootstrap import ensure_collections
from tidemark.state.checkpoints import Checkpoint, Checkpoints
from tidemark.state.errors import Fenced, StateError
from tidemark.state.store import PartitionStore

__all__ = [
    "Checkpoint",
    "Checkpoints",
    "Fenced",
    "PartitionStore",
    "StateError",
    "ensure_collections",
]
