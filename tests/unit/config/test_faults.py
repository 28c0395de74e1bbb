"""Fault points: the specs the crash tests arm, and the in-process crash."""

from __future__ import annotations

import pytest

from tidemark.config import faults
from tidemark.config.faults import Crash, _parse


def test_fault_specs() -> None:
    rules = _parse("commit_transaction:n=3, move_checkpoint:p=0.5,flush_state")
    assert rules["commit_transaction"].count == 3
    assert rules["move_checkpoint"].probability == 0.5
    assert rules["flush_state"].count == 1
    with pytest.raises(ValueError, match="unknown point"):
        _parse("before_lunch")


def test_armed_point_crashes_at_its_nth_hit_and_everything_after() -> None:
    faults.arm("flush_state", 2)
    try:
        faults.point("flush_state")
        faults.point("send_offsets")
        with pytest.raises(Crash, match="flush_state"):
            faults.point("flush_state")
        assert faults.crashed()
        with pytest.raises(Crash):
            faults.point("send_offsets")  # a crashed process writes nothing more
    finally:
        faults.disarm()
    faults.point("flush_state")
    assert not faults.crashed()
