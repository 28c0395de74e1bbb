"""The `dedupe` step: drop a record whose id was already seen within a span of event time.

The span is event time against the step's stream time, like a window's (docs/ARCHITECTURE.md,
"Dedupe and state TTL"), so it is kept in milliseconds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from tidemark.config.aggregation import Millis
from tidemark.config.base import NAME, Strict, field_path


class Dedupe(Strict):
    """The first record of an id passes; a later one whose event time is before
    `first + within` is a duplicate and dropped, until stream time reaches `first + within`."""

    id: Annotated[str, Field(pattern=NAME, description="names the step's state")]
    key: str = Field(min_length=1, description="field path of the id that makes a duplicate")
    within: Millis = Field(description="how long after its first event time an id is remembered")
    time: str | None = Field(
        None, description="event-time field (epoch ms or ISO 8601); absent: the record's"
    )

    @model_validator(mode="after")
    def _paths(self) -> Dedupe:
        for name, path in (("key", self.key), ("time", self.time)):
            if path is not None and not field_path(path):
                raise ValueError(f"{name}: not a field path: {path!r}")
        return self
