"""`tidemark validate` on hypothesis-generated topology files: it accepts, or explains with
exit code 2; it never prints a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.hostile import hostile_topologies
from tidemark.processor.cli.main import main


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=hostile_topologies())
def test_validate_accepts_or_names_each_problem(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.yaml"
        path.write_text(text, encoding="utf-8")
        code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code == 0:
        assert out.strip().endswith(": ok")
        return
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert lines and lines[0].startswith(str(path)), err
    for line in lines[1:]:
        assert line.startswith("  ") and line.strip(), err
