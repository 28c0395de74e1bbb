"""`tidemark validate` reports a custom step that cannot load, with its path, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.processor.cli.main import main

TOPOLOGY = """
name: t
kafka: {bootstrap_servers: k}
mongo: {uri: m}
source: {topic: in, key: user}
pipeline:
  - filter: "amount > 0"
  - flat_map: items
  - python: %s
  - route:
      - {when: "cents > 100", to: big}
      - {otherwise: small}
"""


def validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str) -> tuple[int, str]:
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY % target)
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out + err


def test_custom_steps_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = validate(tmp_path, capsys, "tests.custom_steps:enrich")
    assert (code, output.strip()) == (0, f"{tmp_path / 't.yaml'}: ok")


def test_bad_import_exits_two_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(tmp_path, capsys, "nosuch.mod:fn")
    assert code == 2
    assert output.splitlines()[1:] == [
        "  pipeline[2].python: cannot import 'nosuch.mod': No module named 'nosuch'"
    ]


def test_bad_signature_exits_two_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = validate(tmp_path, capsys, "tests.custom_steps:two_arguments")
    assert code == 2
    assert output.splitlines()[1:] == [
        "  pipeline[2].python: 'tests.custom_steps:two_arguments' must be called as fn(value),"
        " but its signature is (value, extra)"
    ]


def test_stateful_signature_is_checked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = "{callable: tests.custom_steps:enrich, stateful: true, key: user, id: s}"
    code, output = validate(tmp_path, capsys, target)
    assert code == 2
    assert (
        "pipeline[2].python: 'tests.custom_steps:enrich' must be called as fn(value, state)"
        in output
    )
