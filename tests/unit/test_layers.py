"""Dependencies run one way (docs/ARCHITECTURE.md): no package imports one above it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMPORT = re.compile(r"^\s*(?:from|import) tidemark\.(\w+)(?:\.(\w+))?", re.M)
# What each package may import of ours.
PACKAGES = {
    "config": {"config"},
    "operators": {"config", "operators"},
    "state": {"config", "state"},
    "features": {"config", "state", "features"},
}
# processor's subpackages, each importing only those before it.
PROCESSOR = ["observability", "kafka", "protocol", "runtime", "coordination", "cli"]


def imports(path: Path) -> list[tuple[str, str | None]]:
    return IMPORT.findall(path.read_text())


def test_base_packages_import_only_what_they_may() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports tidemark.{package}"
        for top, allowed in PACKAGES.items()
        for path in (ROOT / top).rglob("*.py")
        for package, _ in imports(path)
        if package not in allowed
    ]
    assert not wrong, wrong


def test_storage_and_serving_never_touch_kafka() -> None:
    kafka = re.compile(r"^\s*(?:from|import) confluent_kafka", re.M)
    wrong = [
        str(path.relative_to(ROOT))
        for top in ("config", "operators", "state", "features")
        for path in (ROOT / top).rglob("*.py")
        if kafka.search(path.read_text())
    ]
    assert not wrong, wrong


def test_processor_subpackages_depend_one_way() -> None:
    wrong = []
    for path in (ROOT / "processor").rglob("*.py"):
        own = path.relative_to(ROOT / "processor").parts[0]
        if own not in PROCESSOR:
            continue
        for package, sub in imports(path):
            if package == "processor" and sub and PROCESSOR.index(sub) > PROCESSOR.index(own):
                wrong.append(f"{path.relative_to(ROOT)} imports processor.{sub}")
    assert not wrong, wrong
    assert {p.name for p in (ROOT / "processor").iterdir() if p.is_dir()} - {"__pycache__"} == set(
        PROCESSOR
    )
