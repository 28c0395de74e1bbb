"""Collection names and document ids: one place, so every reader agrees."""

from __future__ import annotations


def state_collection(topology: str) -> str:
    """One state collection per topology."""
    return f"state.{topology}"


CHECKPOINTS = "checkpoints"


def state_id(op: str, partition: int, key: str) -> str:
    """`op:partition:key`: op names and partitions have no colon, so the split is unambiguous.

    The partition is part of the id because each source partition owns its keys: the
    source topic must be partitioned by the group key, as in Kafka Streams.
    """
    return f"{op}:{partition}:{key}"


def state_prefix(op: str, partition: int) -> str:
    """What every `state_id` of `op` in `partition` starts with: a batch computes it once."""
    return f"{op}:{partition}:"


def checkpoint_id(topology: str, topic: str, partition: int) -> str:
    """One checkpoint document per (topology, topic, partition)."""
    return f"{topology}:{topic}:{partition}"
