"""Which steps of a topology produce each feature, read from the topology alone."""

from __future__ import annotations

from tidemark.config import Topology
from tidemark.config.model import (
    AggregateStep,
    FlatMapStep,
    JoinStep,
    MapStep,
    ProjectStep,
    PythonStep,
    RenameStep,
)


def lineage(topology: Topology) -> dict[str, list[str]]:
    """Per feature, the steps its value comes through, first to last.

    A field nobody defines comes from the source topic; a python step or a join without
    `fields` may set any field, so it is listed for every feature that passes it.
    """
    group = topology.feature_group
    if group is None:
        return {}
    source = f"source topic {topology.source.topic}"
    origin: dict[str, list[str]] = {}  # field: steps that made it; absent: from the source

    def made(name: str) -> list[str]:
        return origin.get(name, [source])

    for i, step in enumerate(topology.pipeline):
        where = f"pipeline[{i}]"
        if isinstance(step, AggregateStep):
            spec = step.aggregate
            origin = {
                name: [f"{where} aggregate {spec.id}: {_aggregation(fn, field)}"]
                for name, (fn, field, _) in spec.compute.items()
            }
        elif isinstance(step, MapStep):
            for name, expression in step.map.items():
                origin[name] = [f"{where} map: {expression}"]
        elif isinstance(step, RenameStep):
            renames = step.rename.items()
            origin.update({new: [*made(old), f"{where} rename {old}"] for old, new in renames})
        elif isinstance(step, ProjectStep):
            origin = {name: made(name) for name in step.project}
        elif isinstance(step, FlatMapStep) and step.flat_map.as_ is not None:
            origin[step.flat_map.as_] = [f"{where} flat_map {step.flat_map.field}"]
        elif isinstance(step, JoinStep):
            join = step.join
            for name in join.fields or group.features:
                origin[name] = [*made(name), f"{where} join {join.table} (may set it)"]
        elif isinstance(step, PythonStep):
            for name in group.features:
                origin[name] = [*made(name), f"{where} python {step.python.callable} (may set it)"]
    return {name: made(name) for name in group.features}


def _aggregation(function: str, field: str | None) -> str:
    return f"{function}({field})" if field else function
