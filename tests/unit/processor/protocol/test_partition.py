"""A partition's lifecycle: phases, the offsets it owns, snapshot requests served once."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tidemark.processor.protocol.partition import Partition, Phase, PhaseError
from tidemark.state import Checkpoint, PartitionStore


def partition(offset: int = 100, emit_from: int = 150, cut_from: int = 150) -> Partition:
    cp = Checkpoint("t:in:0", "in", 0, offset, epoch=3, status="running", error=None)
    store = PartitionStore(cast(Any, None), 0)  # never touches MongoDB in these tests
    return Partition(cp, store, {}, emit_from=emit_from, cut_from=cut_from)


def test_recovering_until_the_position_passes_cut_from() -> None:
    part = partition()
    assert part.phase is Phase.RECOVERING and not part.checkpointable()
    part.processed(120)
    assert part.phase is Phase.RECOVERING
    part.processed(150)
    assert part.phase is Phase.RUNNING and part.checkpointable()


def test_a_clean_start_runs_at_once() -> None:
    assert partition(cut_from=100).phase is Phase.RUNNING


def test_kafka_offset_never_moves_c_back() -> None:
    part = partition()
    assert part.kafka_offset() is None
    part.processed(120)
    assert part.kafka_offset() == 150, "re-applying [W, C) must not move C back"
    part.commit_floor = 400
    part.processed(200)
    assert part.kafka_offset() == 400


def test_only_allowed_transitions_and_leaving_forgets_memory() -> None:
    part = partition(cut_from=100)
    part.store.put("agg", "k", 1, 101)
    part.move(Phase.FAILED)
    with pytest.raises(PhaseError):
        part.move(Phase.RUNNING)
    part.move(Phase.HANDED_OFF)
    assert part.store.dirty_count == 0 and not part.owned
    with pytest.raises(PhaseError):
        part.move(Phase.DROPPED)


def test_a_snapshot_request_is_served_once_even_if_a_stale_poll_repeats_it() -> None:
    part = partition(cut_from=100)
    part.processed(100)
    part.note(snapshot_request="r1")
    assert part.snapshot_request == "r1" and part.pending()
    part.answered.add("r1")  # the snapshot was taken
    part.note(snapshot_request="r1")  # a poll that read the document before the answer
    assert part.snapshot_request is None and not part.pending()


def test_field_updates_keep_what_changed_meanwhile() -> None:
    part = partition(cut_from=100)
    part.note(snapshot_request="r2")  # the control poll, during a checkpoint's await
    part.note(offset=180)  # the checkpoint's write completes
    assert (part.checkpoint.offset, part.checkpoint.snapshot_request) == (180, "r2")
