"""Tables and the `join` step: a topic read as a table (latest value per key) that stream
records are enriched from (docs/ARCHITECTURE.md, "Enrichment join")."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tidemark.config.base import NAME, Strict, field_path

TOPIC = r"^[A-Za-z0-9._-]{1,249}$"  # what Kafka accepts as a topic name


class Table(Strict):
    """A topic read as a table: each record's Kafka key is the row key, its JSON object value
    the row; a null value deletes the row. Partitioned like the source (checked at start)."""

    topic: Annotated[str, Field(pattern=TOPIC)]


class Join(Strict):
    """Enrich each stream record with the row of `table` whose key is the record's `on`."""

    table: Annotated[str, Field(pattern=NAME, description="a name under `tables:`")]
    on: str = Field(min_length=1, description="field path of the row key in a stream record")
    fields: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="the row's top-level fields to add; absent: all"
    )
    how: Literal["left", "inner"] = Field(
        "left", description="left: no row adds the fields as null; inner: no row drops the record"
    )
    id: Annotated[str, Field(pattern=NAME)] | None = Field(
        None, description="names the step's copy of the table; absent: join_<table>"
    )

    @model_validator(mode="before")
    @classmethod
    def _on_is_not_true(cls, data: object) -> object:
        # YAML 1.1 reads the bare key `on` as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _path(self) -> Join:
        if not field_path(self.on):
            raise ValueError(f"on: not a field path: {self.on!r}")
        return self

    @property
    def state_id(self) -> str:
        return self.id or f"join_{self.table}"
