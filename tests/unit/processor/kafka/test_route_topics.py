"""Route topics are checked at start like the sink: a missing one is a `TopologyError`."""

from __future__ import annotations

import pytest

from tidemark.config import parse_topology
from tidemark.processor.kafka import topics
from tidemark.processor.kafka.topics import TopologyError, check_topics, route_topics

TOPOLOGY = parse_topology(
    """
name: t
kafka: {bootstrap_servers: k}
mongo: {uri: m}
source: {topic: in}
errors: {dead_letter_topic: dlq}
pipeline:
  - route:
      - {when: "a > 1", to: big}
      - {when: "a > 0", to: small}
      - {when: "a > -1", to: big}
      - {otherwise: rest}
"""
)


def test_route_topics_in_order_without_repeats() -> None:
    assert route_topics(TOPOLOGY) == ["big", "small", "rest"]


def test_a_missing_route_topic_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []

    def counts(topology: object, names: list[str]) -> dict[str, int]:
        asked.append(names)
        return {n: 2 for n in names if n != "small"}

    monkeypatch.setattr(topics, "partition_counts", counts)
    with pytest.raises(TopologyError, match="route topic 'small' does not exist; create it first"):
        check_topics(TOPOLOGY)
    assert set(asked[0]) == {"in", "dlq", "big", "small", "rest"}


def test_existing_route_topics_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "partition_counts", lambda t, names: dict.fromkeys(names, 2))
    assert check_topics(TOPOLOGY)["rest"] == 2
