"""Liveness follows the loop's turns; readiness needs the group joined and no outage."""

from __future__ import annotations

import time

import pytest

from tidemark.config import Topology
from tidemark.processor.runtime.health import Health, liveness_bound


@pytest.fixture
def topology() -> Topology:
    return Topology.model_validate(
        {
            "name": "health",
            "kafka": {"bootstrap_servers": "localhost:1"},
            "mongo": {"uri": "mongodb://localhost:1"},
            "source": {"topic": "in"},
        }
    )


def test_ready_only_once_joined_and_not_waiting_or_stopping(topology: Topology) -> None:
    health = Health(topology, lambda: {0, 1})
    assert not health.ready().ok, "not before the first assignment"
    health.joined = True
    assert health.ready().ok and health.ready().detail["partitions"] == [0, 1]
    health.waiting_for = "mongo"
    assert not health.ready().ok
    health.waiting_for = None
    health.stopping = True
    assert not health.ready().ok


def test_a_member_with_no_partitions_is_a_ready_standby(topology: Topology) -> None:
    health = Health(topology, set)
    health.joined = True
    assert health.ready().ok


def test_a_loop_that_stopped_turning_is_dead_and_not_ready(topology: Topology) -> None:
    health = Health(topology, set)
    health.joined = True
    health.turned_at = time.monotonic() - liveness_bound(topology) - 1
    assert not health.live().ok and not health.ready().ok
    health.turn()
    assert health.live().ok and health.ready().ok


def test_the_liveness_bound_outlasts_slow_commits(topology: Topology) -> None:
    assert liveness_bound(topology) == 30.0
    slow = topology.model_copy(
        update={"checkpoint": topology.checkpoint.model_copy(update={"interval": 20.0})}
    )
    assert liveness_bound(slow) == 60.0
