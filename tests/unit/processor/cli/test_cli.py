"""`tidemark validate` exit codes and output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.processor.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[4] / "config/examples/clicks-per-user.yaml"


def test_valid_file_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out


def test_invalid_file_exits_two_with_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("sum: amount", "summ: amount"))
    assert main(["validate", str(bad)]) == 2
    assert (
        "pipeline[1].aggregate.compute.total: unknown aggregation 'summ'" in capsys.readouterr().err
    )


def test_bad_expression_exits_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace('"amount > 0"', '"amount.__class__"'))
    assert main(["validate", str(bad)]) == 2
    assert "attribute access is not allowed" in capsys.readouterr().err


def test_missing_file_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/nonexistent.yaml"]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_replay_needs_exactly_one_start(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["replay", str(EXAMPLE), "--partition", "0"])
    assert exited.value.code == 2
    assert "one of the arguments --from-snapshot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["replay", str(EXAMPLE), "--partition", "0", "--from-start", "--from-offset", "5"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_replay_from_time_must_be_iso8601(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["replay", str(EXAMPLE), "--partition", "0", "--from-time", "yesterday"])
    assert "not an ISO 8601 time: 'yesterday'" in capsys.readouterr().err


def test_operations_commands_reject_a_bad_topology_with_exit_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("retain: 10 ", "retain: -1 "))
    assert main(["status", str(bad), "--json"]) == 2
    assert "snapshots.retain" in capsys.readouterr().err
