"""Read a topology file: YAML, then interpolation, then validation, errors with field paths."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from tidemark.config.errors import TidemarkError
from tidemark.config.interpolate import MissingVariable, interpolate
from tidemark.config.model import Topology


@dataclass(frozen=True)
class FieldError:
    """One problem in a topology file: where (`pipeline[1].aggregate.id`) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        message = " ".join(self.message.split())  # one line per problem
        return f"{self.path}: {message}" if self.path else message


class ConfigError(TidemarkError):
    """A topology file that cannot be used; carries every problem found."""

    def __init__(self, source: str, errors: list[FieldError]) -> None:
        self.source = source
        self.errors = errors
        super().__init__("\n".join([f"{source}: invalid topology", *(f"  {e}" for e in errors)]))


def load_topology(path: str | Path, env: Mapping[str, str] | None = None) -> Topology:
    """Load and validate the topology at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [FieldError("", f"cannot read file: {exc.strerror}")]) from exc
    return parse_topology(text, str(path), env)


def parse_topology(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> Topology:
    """Validate topology YAML `text`; `source` names it in errors."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [FieldError(where, f"not valid YAML: {problem}")]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(source, [FieldError("", "a topology is a YAML mapping")])
    try:
        resolved = interpolate(raw, os.environ if env is None else env)
    except MissingVariable as exc:
        raise ConfigError(source, [FieldError(exc.path, str(exc))]) from exc
    try:
        return Topology.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(source, [_field_error(e) for e in exc.errors()]) from exc


_STEP_TAGS = {
    "filter",
    "map",
    "project",
    "aggregate",
    "rename",
    "flat_map",
    "route",
    "python",
    "dedupe",
    "join",
}
_PLAIN_KEY = re.compile(r"^[\w.-]+$")


def _key(item: object) -> str:
    """A key as written in a path; an odd one (empty, spaces, control characters) quoted."""
    text = str(item)
    return text if _PLAIN_KEY.match(text) else json.dumps(text)


def _field_error(error: object) -> FieldError:
    assert isinstance(error, dict)
    loc: tuple[object, ...] = error["loc"]
    parts: list[str] = []
    previous: object = None
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif (
            previous is not None
            and isinstance(previous, int)
            and item in _STEP_TAGS
            and parts[-1].startswith("pipeline[")
        ):
            pass  # the discriminator's tag repeats the step kind that follows
        else:
            parts.append(_key(item))
        previous = item
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return FieldError(".".join(parts), message)
