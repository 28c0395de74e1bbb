"""Topology loading: defaults, interpolation, and errors that name the offending field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.config import ConfigError, load_topology, parse_topology
from tidemark.config.durations import parse_duration

EXAMPLE = Path(__file__).resolve().parents[3] / "config/examples/clicks-per-user.yaml"


def example(**replace: str) -> str:
    text = EXAMPLE.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_topology(text, env=env or {})
    return [str(e) for e in caught.value.errors]


def test_example_loads_with_defaults_from_environment() -> None:
    topology = load_topology(EXAMPLE, env={"MONGO_URI": "mongodb://db:1"})
    assert topology.kafka.bootstrap_servers == "localhost:9092"
    assert topology.mongo.uri == "mongodb://db:1"
    assert topology.checkpoint.interval == 1.0
    assert topology.dead_letter_topic == "clicks-per-user.dlq"
    assert [a.id for a in topology.aggregates()] == ["per_user"]
    assert topology.aggregates()[0].compute == {
        "count": ("count", None, None),
        "total": ("sum", "amount", None),
    }


def test_unknown_aggregation_is_reported_with_its_path() -> None:
    assert errors_of(example(**{"sum: amount": "summ: amount"})) == [
        "pipeline[1].aggregate.compute.total: unknown aggregation 'summ'"
        " (known: count, sum, min, max, avg, first, last, distinct_count, collect, python)"
    ]


def test_every_error_is_reported_at_once() -> None:
    text = example(**{"format: json": "format: avro\n  extra: 1", "interval: 1s": "interval: soon"})
    found = errors_of(text)
    assert "source.format: Input should be 'json' or 'bytes'" in found
    assert "source.extra: unknown key" in found
    assert any(e.startswith("checkpoint.interval: invalid duration 'soon'") for e in found)


def test_unknown_step_kind() -> None:
    assert errors_of(example(**{"- filter:": "- filtr:"})) == [
        "pipeline[0]: a step is one of filter, map, project, aggregate, rename, flat_map, route,"
        " python, dedupe, join"
    ]


def test_missing_variable_without_default_names_field() -> None:
    text = example(**{"${MONGO_URI:-mongodb://localhost:27017}": "${MONGO_URL}"})
    assert errors_of(text) == [
        "mongo.uri: environment variable MONGO_URL is not set and has no default"
    ]


def test_not_a_mapping_and_bad_yaml() -> None:
    assert errors_of("- a\n- b\n") == ["a topology is a YAML mapping"]
    assert errors_of("name: [unclosed")[0].startswith("line 1, column 16: not valid YAML")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("1s", 1.0), ("5m", 300.0), ("2h", 7200.0), ("7d", 604800.0), (3, 3.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "1 week", "-1s", "0s", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_snapshot_policy_loads_and_bad_values_name_their_field() -> None:
    topology = parse_topology(EXAMPLE.read_text(), env={})
    policy = topology.snapshots
    assert (policy.interval, policy.retain, policy.max_age, policy.mode) == (
        300.0,
        10,
        7 * 86400.0,
        "full",
    )
    bad = example(**{"mode: full ": "mode: fancy", "retain: 10 ": "retain: 0 "})
    found = errors_of(bad)
    assert any(e.startswith("snapshots.mode:") for e in found), found
    assert any(e.startswith("snapshots.retain:") for e in found), found


def test_semantic_hash_ignores_addresses_but_not_the_pipeline() -> None:
    base = parse_topology(EXAMPLE.read_text(), env={}).semantic_hash()
    moved = parse_topology(EXAMPLE.read_text(), env={"MONGO_URI": "mongodb://elsewhere:1"})
    changed = parse_topology(example(**{'"amount > 0"': '"amount > 1"'}), env={})
    assert moved.semantic_hash() == base
    assert changed.semantic_hash() != base
