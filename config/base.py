"""What every section of the topology schema shares."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # ids that end up in document ids and topic names


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def field_path(path: str) -> tuple[str, ...]:
    """`a.b.c` as its parts."""
    return tuple(p for p in re.split(r"\.", path) if p)
