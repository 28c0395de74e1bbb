"""Turn the steps of a topology into operator instances."""

from __future__ import annotations

from tidemark.config.aggregation import Aggregate, Session, Sliding
from tidemark.config.model import (
    AggregateStep,
    DedupeStep,
    FilterStep,
    FlatMapStep,
    JoinStep,
    MapStep,
    ProjectStep,
    PythonStep,
    RenameStep,
    RouteStep,
    Step,
    Topology,
)
from tidemark.operators.aggregate import KeyedAggregate
from tidemark.operators.custom import PythonMap, PythonStateful
from tidemark.operators.dedupe import Dedupe
from tidemark.operators.events import StepError
from tidemark.operators.expiry import Expiring
from tidemark.operators.join import Join
from tidemark.operators.pipeline import Operator, Pipeline
from tidemark.operators.session import SessionAggregate
from tidemark.operators.sliding import SlidingAggregate
from tidemark.operators.stateless import Filter, FlatMap, Map, Project, Rename, Route
from tidemark.operators.window import TimeWindowAggregate


def build_pipeline(topology: Topology) -> Pipeline:
    """The topology's pipeline; `StepError` (with the step's `path`) for a step that cannot
    be built: an expression that does not parse or is not allowed, a custom callable that
    does not import, a misplaced `route`, two stateful steps with one id."""
    operators: list[Operator] = []
    owners: dict[str, int] = {}  # stateful id: its step
    for i, step in enumerate(topology.pipeline):
        try:
            _check_placement(topology, i, step)
            # The first step sees records as decoded, keyed by the source's key field.
            source_key = topology.source.key if i == 0 else None
            if isinstance(step, JoinStep):
                operator: Operator = _join(topology, step)
            else:
                operator = _operator(step, source_key)
            if operator.stateful and operator.id in owners:
                raise StepError(
                    f"id {operator.id!r} is also pipeline[{owners[operator.id]}]'s: "
                    "each stateful step keeps its own state, under its own id",
                    ".id",
                )
        except StepError as exc:
            exc.path = f"pipeline[{i}].{next(iter(type(step).model_fields))}{exc.path}"
            raise
        if operator.stateful:
            owners[operator.id] = i
        operators.append(operator)
    return Pipeline(operators)


def _check_placement(topology: Topology, i: int, step: Step) -> None:
    """`route` chooses where outputs go, so it comes last; and with `otherwise` every record
    is routed, so a sink would receive nothing (a mistake worth saying at load)."""
    if not isinstance(step, RouteStep):
        return
    if i != len(topology.pipeline) - 1:
        raise StepError("route must be the last step: it chooses where each output goes")
    if step.otherwise is not None and topology.sink is not None:
        features = topology.sink.features
        sink = topology.sink.topic or (features.group if features else "")
        raise StepError(
            f"every record that matches no branch goes to {step.otherwise!r}, so the sink "
            f"{sink!r} would receive nothing: remove one of them",
            f"[{len(step.route) - 1}].otherwise",
        )


def _join(topology: Topology, step: JoinStep) -> Join:
    spec = step.join
    if spec.table not in topology.tables:
        declared = ", ".join(sorted(topology.tables)) or "none"
        raise StepError(f"no table {spec.table!r} under `tables:` (declared: {declared})", ".table")
    key = topology.source.key
    if key is not None and key != spec.on:
        # The stream is partitioned by its Kafka key, which this topology never sees: the
        # source's key field must be the join key for the rows to be in the same partition.
        raise StepError(
            f"the source is keyed by {key!r}: a join needs its stream keyed by the join key, "
            f"so `on` must be {key!r} (or the source's `key` left to the Kafka key)",
            ".on",
        )
    return Join(spec, keyed_by_on=key is None)


def _aggregate(spec: Aggregate, source_key: str | None = None) -> Operator:
    if isinstance(spec.window, Session):
        return SessionAggregate(spec)
    if isinstance(spec.window, Sliding):
        return SlidingAggregate(spec)
    if spec.window is not None:
        return TimeWindowAggregate(spec)
    if spec.ttl is not None:  # batched for its timers; without a ttl it stays per event
        return Expiring(KeyedAggregate(spec), spec.ttl, spec.time)
    return KeyedAggregate(spec, keyed_by_source=spec.key == source_key)


def _operator(step: Step, source_key: str | None = None) -> Operator:
    match step:
        case FilterStep():
            return Filter(step.filter)
        case MapStep():
            return Map(step.map)
        case ProjectStep():
            return Project(step.project)
        case AggregateStep():
            return _aggregate(step.aggregate, source_key)
        case RenameStep():
            return Rename(step.rename)
        case FlatMapStep():
            return FlatMap(step.flat_map.field, step.flat_map.as_)
        case RouteStep():
            branches = [(b.when, b.to) for b in step.route if b.when is not None and b.to]
            return Route(branches, step.otherwise)
        case PythonStep():
            spec = step.python
            if not spec.stateful:
                return PythonMap(spec)
            if spec.ttl is not None:
                return Expiring(PythonStateful(spec), spec.ttl)
            return PythonStateful(spec)
        case DedupeStep():
            return Dedupe(step.dedupe)
    raise AssertionError(f"unknown step {step!r}")
