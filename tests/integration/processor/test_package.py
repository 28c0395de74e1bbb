"""Tidemark installs one import package: a user's own `config`, `state` or `operators`
on the path cannot shadow ours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.pipelines import Truth, counting_pipeline, end_offsets, produce_clicks, wait_caught_up
from tests.support import Services, TopicFactory

pytestmark = pytest.mark.integration
TIDEMARK = Path(sys.executable).with_name("tidemark")


def scratch_project(root: Path) -> Path:
    """A user's project whose modules share our folders' names and break if imported."""
    root.mkdir()
    (root / "config.py").write_text("raise ImportError('the user config.py was imported')\n")
    (root / "state.py").write_text("raise ImportError('the user state.py was imported')\n")
    (root / "operators").mkdir()
    (root / "operators" / "__init__.py").write_text("raise ImportError('user operators')\n")
    (root / "processor.py").write_text("raise ImportError('the user processor.py')\n")
    return root


def test_only_tidemark_is_installed(tmp_path: Path) -> None:
    probe = (
        "import importlib.util as u; print([n for n in "
        + repr(["config", "state", "operators", "processor", "tidemark"])
        + " if u.find_spec(n)])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert found.stdout.strip() == "['tidemark']", found.stderr


def test_a_user_project_with_our_module_names_runs_validate_and_a_worker(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    source, _, name, topology = counting_pipeline(make_topic, services, sync_db.name, tmp_path, 1)
    project = scratch_project(tmp_path / "project")
    env = {**os.environ, "PYTHONPATH": str(project)}

    validated = subprocess.run(
        [str(TIDEMARK), "validate", str(topology)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validated.returncode == 0, validated.stderr
    assert "ok" in validated.stdout

    truth = Truth()
    produce_clicks(services, source, truth, ["u1", "u2"], 50, seed=1)
    log = (tmp_path / "w.log").open("wb")
    worker = subprocess.Popen(
        [str(TIDEMARK), "run", str(topology)], cwd=project, env=env, stdout=log, stderr=log
    )
    try:
        wait_caught_up(sync_db, name, end_offsets(services, source, 1), 60)
        worker.terminate()
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        log.close()
    assert "ImportError" not in (tmp_path / "w.log").read_text()
