"""Turn the steps of a topology into operator instances."""

from __future__ import annotations

from tidemark.config.model import AggregateStep, FilterStep, MapStep, ProjectStep, Topology
from tidemark.operators.aggregate import KeyedAggregate
from tidemark.operators.pipeline import Operator, Pipeline
from tidemark.operators.stateless import Filter, Map, Project


def build_pipeline(topology: Topology) -> Pipeline:
    """The topology's pipeline; raises `ExpressionError` for an expression that does not parse."""
    operators: list[Operator] = []
    for step in topology.pipeline:
        match step:
            case FilterStep():
                operators.append(Filter(step.filter))
            case MapStep():
                operators.append(Map(step.map))
            case ProjectStep():
                operators.append(Project(step.project))
            case AggregateStep():
                operators.append(KeyedAggregate(step.aggregate))
    return Pipeline(operators)
