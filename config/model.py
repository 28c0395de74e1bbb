"""The topology schema: what a YAML file may say, checked by pydantic with unknown keys refused."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from tidemark.config import secrets
from tidemark.config.aggregation import AGGREGATIONS, Aggregate, Millis
from tidemark.config.base import NAME, Strict, field_path
from tidemark.config.dedupe import Dedupe
from tidemark.config.durations import Duration
from tidemark.config.features import FeatureGroup
from tidemark.config.join import TOPIC, Join, Table

__all__ = ["AGGREGATIONS", "Aggregate", "Strict", "Topology", "field_path"]

_NAME = NAME


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
    time: str | None = Field(
        None,
        description="event-time field (epoch ms or ISO 8601) every record carries to the "
        "sink; absent: the Kafka record timestamp",
    )


class Sink(Strict):
    """Where outputs go: a topic, a feature group, or both."""

    topic: Annotated[str, Field(pattern=TOPIC)] | None = None
    features: FeatureGroup | None = Field(None, description="materialize outputs as features")

    @model_validator(mode="after")
    def _somewhere(self) -> Sink:
        if self.topic is None and self.features is None:
            raise ValueError("a sink needs a `topic`, `features`, or both")
        return self


class Checkpoint(Strict):
    interval: Duration = Field(1.0, description="Kafka transaction commit: output latency")
    # High: a commit's cost is fixed and the interval is the bound that matters
    # (docs/ARCHITECTURE.md, "The commit protocol").
    max_records: int = Field(
        100_000, gt=0, description="commit after this many records too, if before the interval"
    )
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


class FilterStep(Strict):
    filter: str = Field(description="expression over the record's fields, e.g. `amount > 0`")


class MapStep(Strict):
    map: dict[str, str] = Field(min_length=1, description="field: expression")


class ProjectStep(Strict):
    project: list[str] = Field(min_length=1)


class AggregateStep(Strict):
    aggregate: Aggregate


class DedupeStep(Strict):
    dedupe: Dedupe


class JoinStep(Strict):
    join: Join


def _step_kind(step: Any) -> str | None:
    if isinstance(step, dict) and len(step) == 1:
        return str(next(iter(step)))
    if isinstance(step, BaseModel):
        return next(iter(type(step).model_fields))
    return None


def _distinct_targets(fields: object) -> object:
    if isinstance(fields, dict):
        targets = list(fields.values())
        twice = [t for t in targets if targets.count(t) > 1]
        if twice:
            raise ValueError(f"two fields are renamed to {twice[0]!r}")
    return fields


class RenameStep(Strict):
    """Rename top-level fields (`{user_id: user}`); a missing field is left as it is."""

    rename: Annotated[
        dict[str, str],
        Field(min_length=1, description="old field: new field"),
        BeforeValidator(_distinct_targets),
    ]


class FlatMap(Strict):
    """One output per element of an array field: the record with the array replaced by the
    element, or, with `as`, without the array and the element under that top-level field."""

    field: str = Field(min_length=1, description="field path of the array")
    as_: str | None = Field(
        None, alias="as", min_length=1, description="put the element under this field instead"
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: object) -> object:
        return {"field": data} if isinstance(data, str) else data  # `flat_map: items`

    @model_validator(mode="after")
    def _has_path(self) -> FlatMap:
        if not field_path(self.field):
            raise ValueError(f"not a field path: {self.field!r}")
        return self


class FlatMapStep(Strict):
    flat_map: FlatMap


_TOPIC = TOPIC


class RouteBranch(Strict):
    """`{when: expression, to: topic}`, or `{otherwise: topic}` as the last branch."""

    when: str | None = Field(None, description="expression over the record's fields")
    to: Annotated[str, Field(pattern=_TOPIC)] | None = None
    otherwise: Annotated[str, Field(pattern=_TOPIC)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> RouteBranch:
        if self.otherwise is not None and (self.when is not None or self.to is not None):
            raise ValueError("a branch is either {when, to} or {otherwise}")
        if self.otherwise is None and (self.when is None or self.to is None):
            raise ValueError("a branch needs `when` (an expression) and `to` (a topic)")
        return self


def _otherwise_last(branches: object) -> object:
    if isinstance(branches, list) and branches:
        fallbacks = [i for i, b in enumerate(branches) if isinstance(b, dict) and "otherwise" in b]
        if fallbacks and fallbacks != [len(branches) - 1]:
            raise ValueError("`otherwise` may appear once, as the last branch")
        if not any(isinstance(b, dict) and "when" in b for b in branches):
            raise ValueError("a route needs at least one `when` branch")
    return branches


class RouteStep(Strict):
    """Send each record to the topic of the first branch whose `when` holds."""

    route: Annotated[list[RouteBranch], Field(min_length=1), BeforeValidator(_otherwise_last)]

    @property
    def otherwise(self) -> str | None:
        return self.route[-1].otherwise

    def topics(self) -> list[str]:
        """Every topic the route may send to, in order, without repeats."""
        found = [b.to or b.otherwise for b in self.route]
        return list(dict.fromkeys(t for t in found if t is not None))


def _callable_spec(spec: str) -> bool:
    """`package.module:function` (the function may be dotted: `module:Class.method`)."""
    module, colon, name = spec.partition(":")
    return bool(colon) and all(p.isidentifier() for p in [*module.split("."), *name.split(".")])


class PythonCall(Strict):
    """A custom step: `package.module:function`, imported from `sys.path` at load."""

    callable: str = Field(description="package.module:function")
    stateful: bool = Field(False, description="call as fn(value, state) -> (new_state, output)")
    key: str | None = Field(None, description="stateful: field path of the state key")
    id: Annotated[str, Field(pattern=_NAME)] | None = Field(
        None, description="stateful: names the state"
    )
    ttl: Millis | None = Field(
        None, description="stateful: a key expires this long after its latest event time"
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: object) -> object:
        return {"callable": data} if isinstance(data, str) else data  # `python: mod:fn`

    @model_validator(mode="after")
    def _check(self) -> PythonCall:
        if not _callable_spec(self.callable):
            raise ValueError(f"expected 'package.module:function', got {self.callable!r}")
        if self.stateful and (self.key is None or self.id is None):
            raise ValueError("a stateful python step needs `key` and `id`")
        if not self.stateful and (self.key is not None or self.id is not None):
            raise ValueError("`key` and `id` are for stateful python steps (stateful: true)")
        if not self.stateful and self.ttl is not None:
            raise ValueError("`ttl` is for stateful python steps (stateful: true)")
        return self


class PythonStep(Strict):
    python: PythonCall


Step = Annotated[
    Annotated[FilterStep, Tag("filter")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[ProjectStep, Tag("project")]
    | Annotated[AggregateStep, Tag("aggregate")]
    | Annotated[RenameStep, Tag("rename")]
    | Annotated[FlatMapStep, Tag("flat_map")]
    | Annotated[RouteStep, Tag("route")]
    | Annotated[PythonStep, Tag("python")]
    | Annotated[DedupeStep, Tag("dedupe")]
    | Annotated[JoinStep, Tag("join")],
    Discriminator(
        _step_kind,
        custom_error_type="unknown_step",
        custom_error_message=(
            "a step is one of filter, map, project, aggregate, rename, flat_map, route, python,"
            " dedupe, join"
        ),
    ),
]


class Topology(Strict):
    """One pipeline: source topic, operator steps, optional sink, where state lives."""

    name: Annotated[str, Field(pattern=_NAME, description="consumer group and state namespace")]
    kafka: KafkaConfig
    mongo: MongoConfig
    source: Source
    tables: dict[Annotated[str, Field(pattern=_NAME)], Table] = Field(
        default_factory=dict, description="topics read as tables, by the name `join` uses"
    )
    pipeline: list[Step] = Field(default_factory=list)
    sink: Sink | None = None
    checkpoint: Checkpoint = Checkpoint()
    state: StateConfig = StateConfig()
    snapshots: Snapshots = Snapshots()
    errors: Errors = Errors()
    logging: Logging = Logging()

    @property
    def sink_topic(self) -> str | None:
        return self.sink.topic if self.sink is not None else None

    @property
    def feature_group(self) -> FeatureGroup | None:
        return self.sink.features if self.sink is not None else None

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
        if self.tables:  # only then: hashes of topologies without tables stay as they were
            shape["tables"] = self.model_dump(mode="json", include={"tables"})["tables"]
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
