"""The `features` sink: a feature group the pipeline's outputs materialize in MongoDB."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tidemark.config.base import NAME, Strict, field_path
from tidemark.config.durations import Duration

FeatureType = Literal["int", "float", "str", "bool"]


class Feature(Strict):
    """One feature's schema: the gates a value passes before it is materialized."""

    type: FeatureType
    min: float | None = Field(None, description="int and float: the smallest value allowed")
    max: float | None = Field(None, description="int and float: the largest value allowed")
    nullable: bool = Field(False, description="null (or an absent field) is a valid value")

    @model_validator(mode="after")
    def _bounds(self) -> Feature:
        numeric = self.type in ("int", "float")
        if not numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"min and max are for int and float features, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class FeatureGroup(Strict):
    """Per-entity feature values, one document per (group, version, entity)."""

    group: Annotated[str, Field(pattern=NAME, description="the name readers ask for")]
    version: int = Field(ge=1, description="versions of a group materialize side by side")
    entity: str = Field(
        min_length=1,
        description="field path of the entity id in an output; absent there: the output's key",
    )
    schema_: dict[Annotated[str, Field(pattern=NAME)], Feature] = Field(
        alias="schema", min_length=1, description="feature name (an output field): its gates"
    )
    ttl: Duration | None = Field(
        None, description="a value whose event time is older than this is served as missing"
    )
    freshness_sla: Duration | None = Field(
        None, description="event time to readable; a breach is a warning (one per minute)"
    )
    history: Duration | None = Field(
        None, description="keep every materialized value this long, for `as_of` reads"
    )

    @model_validator(mode="after")
    def _entity_path(self) -> FeatureGroup:
        if not field_path(self.entity):
            raise ValueError(f"not a field path: {self.entity!r}")
        return self

    @property
    def features(self) -> dict[str, Feature]:
        return self.schema_
