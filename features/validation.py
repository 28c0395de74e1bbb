"""The gates an output passes before it becomes a feature row: entity, type, range, null."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tidemark.config.base import field_path
from tidemark.config.errors import TidemarkError
from tidemark.config.features import Feature, FeatureGroup


class FeatureViolation(TidemarkError):
    """An output breaks a rule of its feature group; the record goes to dead letters."""

    def __init__(self, group: FeatureGroup, feature: str, rule: str, detail: str) -> None:
        super().__init__(
            f"feature {feature!r} of group {group.group!r} v{group.version} breaks rule "
            f"{rule!r}: {detail}"
        )
        self.feature = feature
        self.rule = rule


@dataclass(slots=True)
class Row:
    """One entity's feature values as of one output; ordered by `(time, partition, offset)`."""

    entity: str
    values: dict[str, Any]
    time: int  # event time, epoch ms
    partition: int
    offset: int

    @property
    def order(self) -> tuple[int, int, int]:
        """What decides which of two rows of an entity is the newer one."""
        return (self.time, self.partition, self.offset)


class Gate:
    """Turns outputs into rows of one feature group, or says which rule they break."""

    def __init__(self, group: FeatureGroup) -> None:
        self.group = group
        self._entity = field_path(group.entity)

    def row(self, value: Any, key: str | None, time: int, partition: int, offset: int) -> Row:
        """The row of output `value` (its Kafka key `key`); `FeatureViolation` if a gate fails."""
        if not isinstance(value, dict):
            raise FeatureViolation(self.group, "*", "object", f"output is {type(value).__name__}")
        entity = _entity(value, self._entity, key)
        if entity is None:
            raise FeatureViolation(
                self.group,
                self.group.entity,
                "entity",
                "the output has no string or integer entity id there, nor a key",
            )
        features = self.group.features.items()
        values = {name: self._check(name, spec, value.get(name)) for name, spec in features}
        return Row(entity, values, time, partition, offset)

    def _check(self, name: str, spec: Feature, value: Any) -> Any:
        if value is None:
            if spec.nullable:
                return None
            raise FeatureViolation(self.group, name, "nullable", "null or absent, not nullable")
        value = _typed(spec, value)
        if value is None:
            raise FeatureViolation(self.group, name, "type", f"expected {spec.type}")
        if isinstance(value, float) and not math.isfinite(value):
            raise FeatureViolation(self.group, name, "finite", f"{value} is not a finite number")
        if spec.min is not None and value < spec.min:
            raise FeatureViolation(self.group, name, "min", f"{value!r} is below {spec.min:g}")
        if spec.max is not None and value > spec.max:
            raise FeatureViolation(self.group, name, "max", f"{value!r} is above {spec.max:g}")
        return value


def _typed(spec: Feature, value: Any) -> Any:
    """`value` as the feature's type, or None if it is not one (bool is never a number)."""
    if isinstance(value, bool):
        return value if spec.type == "bool" else None
    if spec.type == "int":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else None
    if spec.type == "float":
        return float(value) if isinstance(value, int | float) else None
    if spec.type == "str":
        return value if isinstance(value, str) else None
    return None


def _entity(value: dict[str, Any], path: tuple[str, ...], key: str | None) -> str | None:
    found: Any = value
    for part in path:
        found = found.get(part) if isinstance(found, dict) else None
    if found is None:
        found = key
    if isinstance(found, int) and not isinstance(found, bool):
        return str(found)
    return found if isinstance(found, str) and found else None
