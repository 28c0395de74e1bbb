"""Turn the steps of a topology into operator instances."""

from __future__ import annotations

from tidemark.config.model import (
    AggregateStep,
    FilterStep,
    MapStep,
    ProjectStep,
    Step,
    Topology,
)
from tidemark.operators.aggregate import KeyedAggregate
from tidemark.operators.expressions import ExpressionError
from tidemark.operators.pipeline import Operator, Pipeline
from tidemark.operators.stateless import Filter, Map, Project


def build_pipeline(topology: Topology) -> Pipeline:
    """The topology's pipeline; `ExpressionError` (with the step's `path`) for an expression
    that does not parse or is not allowed."""
    operators: list[Operator] = []
    for i, step in enumerate(topology.pipeline):
        try:
            operators.append(_operator(step))
        except ExpressionError as exc:
            exc.path = f"pipeline[{i}].{next(iter(type(step).model_fields))}"
            raise
    return Pipeline(operators)


def _operator(step: Step) -> Operator:
    match step:
        case FilterStep():
            return Filter(step.filter)
        case MapStep():
            return Map(step.map)
        case ProjectStep():
            return Project(step.project)
        case AggregateStep():
            return KeyedAggregate(step.aggregate)
    raise AssertionError(f"unknown step {step!r}")
