"""The gates of a feature group: what becomes a row, and which rule a bad output breaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidemark.config import ConfigError, load_topology, parse_topology
from tidemark.config.features import FeatureGroup
from tidemark.features.materialize import FeatureBuffer
from tidemark.features.validation import FeatureViolation, Gate, Row

EXAMPLE = Path(__file__).resolve().parents[3] / "config/examples/user-features.yaml"


def group() -> FeatureGroup:
    found = load_topology(EXAMPLE, env={}).feature_group
    assert found is not None
    return found


def rule_broken(value: Any, key: str | None = "u1") -> tuple[str, str]:
    with pytest.raises(FeatureViolation) as caught:
        Gate(group()).row(value, key, 1000, 0, 7)
    return caught.value.feature, caught.value.rule


def test_an_output_becomes_a_row_of_its_entity_with_typed_values() -> None:
    row = Gate(group()).row({"clicks_1h": 3, "spend_1h": 2, "extra": "x"}, "u1", 1000, 2, 7)
    assert row == Row("u1", {"clicks_1h": 3, "spend_1h": 2.0, "last_country": None}, 1000, 2, 7)
    assert isinstance(row.values["spend_1h"], float)
    by_field = Gate(group()).row({"user_id": 42, "clicks_1h": 1, "spend_1h": 0.5}, None, 5, 0, 1)
    assert by_field.entity == "42"


@pytest.mark.parametrize(
    ("value", "broken"),
    [
        ({"clicks_1h": -1, "spend_1h": 1.0}, ("clicks_1h", "min")),
        ({"clicks_1h": 1.5, "spend_1h": 1.0}, ("clicks_1h", "type")),
        ({"clicks_1h": True, "spend_1h": 1.0}, ("clicks_1h", "type")),
        ({"clicks_1h": 1}, ("spend_1h", "nullable")),
        ({"clicks_1h": 1, "spend_1h": float("nan")}, ("spend_1h", "finite")),
        ({"clicks_1h": 1, "spend_1h": "3"}, ("spend_1h", "type")),
        ({"clicks_1h": 1, "spend_1h": 1.0, "last_country": 7}, ("last_country", "type")),
        ([1, 2], ("*", "object")),
    ],
)
def test_each_broken_rule_is_named_with_its_feature(value: Any, broken: tuple[str, str]) -> None:
    assert rule_broken(value) == broken


def test_an_output_without_an_entity_breaks_the_entity_rule() -> None:
    assert rule_broken({"clicks_1h": 1, "spend_1h": 1.0}, key=None) == ("user_id", "entity")


def test_the_message_names_group_version_feature_and_rule() -> None:
    with pytest.raises(FeatureViolation) as caught:
        Gate(group()).row({"clicks_1h": -4, "spend_1h": 1.0}, "u1", 0, 0, 0)
    message = str(caught.value)
    assert "'clicks_1h'" in message and "'user_activity' v1" in message and "'min'" in message


def test_a_buffer_keeps_the_newest_row_per_entity_or_every_newer_one_for_history() -> None:
    buffer = FeatureBuffer()
    buffer.add(Row("a", {"x": 1}, 200, 0, 5))
    buffer.add(Row("a", {"x": 0}, 100, 0, 9))  # late: older event time, later offset
    buffer.add(Row("b", {"x": 1}, 100, 0, 1))
    buffer.add(Row("b", {"x": 2}, 100, 0, 2))  # same time: the later offset wins
    assert {c[-1].entity: [r.values["x"] for r in c] for c in buffer.take()} == {"a": [1], "b": [2]}
    assert buffer.take() == []
    history = FeatureBuffer(keep_all=True)
    for t, x in [(100, 1), (300, 3), (200, 2), (400, 4)]:  # (200, 2) is late: never served
        history.add(Row("a", {"x": x}, t, 0, x))
    assert [[r.values["x"] for r in c] for c in history.take()] == [[1, 3, 4]]


def test_bad_feature_config_is_rejected_with_the_path_of_the_field() -> None:
    text = EXAMPLE.read_text().replace(
        "clicks_1h: {type: int, min: 0}", "clicks_1h: {type: str, min: 0}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_topology(text, env={})
    assert any("sink.features.schema.clicks_1h" in str(e) for e in caught.value.errors)
    text = EXAMPLE.read_text().replace("version: 1", "version: 0")
    with pytest.raises(ConfigError) as caught:
        parse_topology(text, env={})
    assert any("sink.features.version" in str(e) for e in caught.value.errors)


def test_a_sink_needs_a_topic_or_features() -> None:
    text = EXAMPLE.read_text()
    start = text.index("sink:")
    end = text.index("checkpoint:")
    with pytest.raises(ConfigError) as caught:
        parse_topology(text[:start] + "sink: {}\n" + text[end:], env={})
    assert any("a sink needs" in str(e) for e in caught.value.errors)
