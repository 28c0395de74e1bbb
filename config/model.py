"""The topology schema: what a YAML file may say, checked by pydantic with unknown keys refused."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from tidemark.config import secrets
from tidemark.config.durations import Duration

AGGREGATIONS = ("count", "sum", "min", "max", "avg", "first", "last")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Options = dict[str, str | int | float | bool]


def _from_files(options: object) -> object:
    return secrets.from_files(options) if isinstance(options, dict) else options


FileOptions = Annotated[Options, BeforeValidator(_from_files)]


class KafkaConfig(Strict):
    """Brokers and client settings. `NAME_file: PATH` anywhere in the options reads the
    value of `NAME` from a file (`sasl.password_file: /run/secrets/kafka`)."""

    bootstrap_servers: str
    # Passed through to librdkafka as is: security.protocol, sasl.*, ssl.* and the like go in
    # `options` (every client); `consumer` and `producer` override per client.
    options: FileOptions = Field(default_factory=dict)
    consumer: FileOptions = Field(default_factory=dict)
    producer: FileOptions = Field(default_factory=dict)


class MongoConfig(Strict):
    """Where state lives. Credentials in the URI (`${VAR}` interpolated), in `username` and
    `password`, or in files (`uri_file`, `password_file`); `options` go to the client as
    keyword arguments (tls, tlsCAFile, tlsCertificateKeyFile, authSource, authMechanism...)."""

    uri: str
    database: str = "tidemark"
    username: str | None = None
    password: str | None = None
    options: FileOptions = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: object) -> object:
        if isinstance(data, dict):
            data = secrets.from_files(data)
            assert isinstance(data, dict)
            if isinstance(data.get("uri"), str):
                secrets.register_uri(data["uri"])
        return data

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments for a MongoDB client besides the URI."""
        auth = {"username": self.username, "password": self.password}
        return {**{k: v for k, v in auth.items() if v is not None}, **self.options}


class Source(Strict):
    topic: str
    format: Literal["json", "bytes"] = "json"
    key: str | None = Field(None, description="field path of the key; absent: the Kafka key")
    start: Literal["earliest", "latest"] = "earliest"
    max_record_bytes: int = Field(1_000_000, gt=0)


class Sink(Strict):
    topic: str


class Checkpoint(Strict):
    interval: Duration = Field(1.0, description="Kafka transaction commit: output latency")
    max_records: int = Field(10_000, gt=0, description="commit after this many records too")
    state_interval: Duration = Field(
        5.0, description="flush state and move the MongoDB checkpoint this often; bounds replay"
    )
    max_dirty_keys: int = Field(
        100_000, gt=0, description="flush early past this many; wait for MongoDB past it"
    )


class StateConfig(Strict):
    cache_entries: int = Field(100_000, gt=0, description="LRU bound of the read-through cache")
    flush_statements: int = Field(200, gt=0, description="statements per update command")


class Snapshots(Strict):
    """Versioned per-partition snapshots; with neither trigger set, only on demand."""

    interval: Duration | None = Field(None, description="take one this often")
    every_records: int | None = Field(None, gt=0, description="and/or after this many records")
    retain: int = Field(10, gt=0, description="keep the newest N versions")
    max_age: Duration | None = Field(None, description="and prune versions older than this")
    mode: Literal["full", "incremental"] = Field(
        "full", description="incremental: a changelog of every state checkpoint plus bases"
    )
    full_every: int = Field(
        10, gt=0, description="incremental: every Nth version is a full base, the rest deltas"
    )
    chunk_bytes: int = Field(1_048_576, ge=1024, le=8_388_608, description="payload chunk size")


class Errors(Strict):
    max_consecutive_failures: int = Field(100, gt=0)
    dead_letter_topic: str | None = Field(None, description="default: <name>.dlq")


class Logging(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="the worker's log level; TIDEMARK_LOG_LEVEL overrides it"
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: readable on a terminal, JSON lines otherwise"
    )


def _aggregation(spec: object) -> tuple[str, str | None]:
    """`count` or `{sum: field}` as (function, field)."""
    if spec == "count":
        return ("count", None)
    if isinstance(spec, dict) and len(spec) == 1:
        ((fn, field),) = spec.items()
        if fn not in AGGREGATIONS or fn == "count":
            raise ValueError(f"unknown aggregation {fn!r} (known: {', '.join(AGGREGATIONS)})")
        if not isinstance(field, str) or not field:
            raise ValueError(f"{fn} needs a field path, e.g. {{{fn}: amount}}")
        return (str(fn), field)
    if isinstance(spec, str):
        raise ValueError(f"unknown aggregation {spec!r} (known: {', '.join(AGGREGATIONS)})")
    raise ValueError("an aggregation is `count` or a one-key mapping such as {sum: amount}")


Aggregation = Annotated[tuple[str, str | None], BeforeValidator(_aggregation)]


class Aggregate(Strict):
    id: Annotated[str, Field(pattern=_NAME)]
    key: str = Field(description="field path of the group key")
    compute: dict[str, Aggregation] = Field(min_length=1)


class FilterStep(Strict):
    filter: str = Field(description="expression over the record's fields, e.g. `amount > 0`")


class MapStep(Strict):
    map: dict[str, str] = Field(min_length=1, description="field: expression")


class ProjectStep(Strict):
    project: list[str] = Field(min_length=1)


class AggregateStep(Strict):
    aggregate: Aggregate


def _step_kind(step: Any) -> str | None:
    if isinstance(step, dict) and len(step) == 1:
        return str(next(iter(step)))
    if isinstance(step, BaseModel):
        return next(iter(type(step).model_fields))
    return None


Step = Annotated[
    Annotated[FilterStep, Tag("filter")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[ProjectStep, Tag("project")]
    | Annotated[AggregateStep, Tag("aggregate")],
    Discriminator(
        _step_kind,
        custom_error_type="unknown_step",
        custom_error_message="a step is one of filter, map, project, aggregate",
    ),
]


class Topology(Strict):
    """One pipeline: source topic, operator steps, optional sink, where state lives."""

    name: Annotated[str, Field(pattern=_NAME, description="consumer group and state namespace")]
    kafka: KafkaConfig
    mongo: MongoConfig
    source: Source
    pipeline: list[Step] = Field(default_factory=list)
    sink: Sink | None = None
    checkpoint: Checkpoint = Checkpoint()
    state: StateConfig = StateConfig()
    snapshots: Snapshots = Snapshots()
    errors: Errors = Errors()
    logging: Logging = Logging()

    @property
    def dead_letter_topic(self) -> str:
        return self.errors.dead_letter_topic or f"{self.name}.dlq"

    def aggregates(self) -> list[Aggregate]:
        return [s.aggregate for s in self.pipeline if isinstance(s, AggregateStep)]

    def semantic_hash(self) -> str:
        """Hash of what shapes the state (source, pipeline, sink), not of where it runs.

        Snapshots record it, so a restore under a changed pipeline is visible.
        """
        shape = self.model_dump(mode="json", include={"name", "source", "pipeline", "sink"})
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def field_path(path: str) -> tuple[str, ...]:
    """`a.b.c` as its parts."""
    return tuple(p for p in re.split(r"\.", path) if p)
