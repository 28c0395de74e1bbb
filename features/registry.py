"""Feature-group metadata in MongoDB: schema, lineage and baseline of each (group, version).

Workers register the group their topology materializes when they start; readers (the
client, `tidemark serve`, `tidemark features`) learn from here which groups, versions and
features exist. One topology owns a (group, version): a second one with another schema is
refused, since its rows would mix with the first one's under the same ids (a renamed topology
with the same source, schema and steps is the same definition and may take it over).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config import Topology
from tidemark.config.errors import TidemarkError
from tidemark.config.features import Feature
from tidemark.features.lineage import lineage
from tidemark.features.materialize import current_collection, history_collection

FEATURE_GROUPS = "feature_groups"


class GroupConflict(TidemarkError):
    """Another topology materializes this (group, version) with another schema."""


@dataclass(frozen=True)
class GroupInfo:
    """What readers know about one (group, version)."""

    group: str
    version: int
    entity: str
    features: dict[str, Feature]
    ttl: float | None
    freshness_sla: float | None
    history: float | None
    topology: str
    topology_hash: str
    source_topic: str
    lineage: dict[str, list[str]]
    baseline: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, topology: Topology) -> GroupInfo:
        """The metadata a topology's features sink registers."""
        group = topology.feature_group
        assert group is not None, "the topology has no features sink"
        return cls(
            group=group.group,
            version=group.version,
            entity=group.entity,
            features=dict(group.features),
            ttl=group.ttl,
            freshness_sla=group.freshness_sla,
            history=group.history,
            topology=topology.name,
            topology_hash=topology.semantic_hash(),
            source_topic=topology.source.topic,
            lineage=lineage(topology),
        )

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> GroupInfo:
        features = {k: Feature.model_validate(v) for k, v in doc["schema"].items()}
        fields = {k: doc.get(k) for k in ("ttl", "freshness_sla", "history")}
        return cls(
            group=doc["group"],
            version=doc["version"],
            entity=doc["entity"],
            features=features,
            topology=doc["topology"],
            topology_hash=doc["topology_hash"],
            source_topic=doc["source_topic"],
            lineage=doc.get("lineage", {}),
            baseline=doc.get("baseline") or {},
            **fields,
        )

    def to_doc(self) -> dict[str, Any]:
        """The registered fields (the baseline is recorded apart, by `record_baseline`)."""
        return {
            "group": self.group,
            "version": self.version,
            "entity": self.entity,
            "schema": {k: v.model_dump() for k, v in self.features.items()},
            "ttl": self.ttl,
            "freshness_sla": self.freshness_sla,
            "history": self.history,
            "topology": self.topology,
            "topology_hash": self.topology_hash,
            "source_topic": self.source_topic,
            "lineage": self.lineage,
        }

    def definition(self) -> tuple[Any, ...]:
        """What makes two registrations the same features: a topology renamed with the same
        source, schema and steps may take a version over; anything else may not."""
        return (self.entity, self.features, self.source_topic, self.lineage)

    def describe(self) -> dict[str, Any]:
        """For `tidemark features describe` and the HTTP metadata endpoint."""
        return {**self.to_doc(), "baseline_features": sorted(self.baseline)}


def group_id(group: str, version: int) -> str:
    return f"{group}:{version}"


async def register(db: AsyncDatabase[Any], topology: Topology) -> GroupInfo:
    """Record the topology's feature group; `GroupConflict` if another topology owns it."""
    info = GroupInfo.of(topology)
    registry = db[FEATURE_GROUPS]
    key = group_id(info.group, info.version)
    found = await registry.find_one({"_id": key})
    if found is not None:
        theirs = GroupInfo.from_doc(found)
        if theirs.definition() != info.definition():
            raise GroupConflict(
                f"feature group {info.group!r} version {info.version} is materialized by "
                f"topology {theirs.topology!r} from another definition (schema "
                f"{sorted(theirs.features)}, source {theirs.source_topic!r}); give this one "
                "another version (versions materialize side by side)"
            )
    now = dt.datetime.now(dt.UTC)
    update = {"$set": {**info.to_doc(), "updated_at": now}, "$setOnInsert": {"created_at": now}}
    await registry.update_one({"_id": key}, update, upsert=True)
    await db[current_collection(info.group)].create_index(
        [("ver", ASCENDING), ("w", DESCENDING)], name="latest_writes"
    )
    if info.history is not None:
        await db[history_collection(info.group)].create_index(
            [("ver", ASCENDING), ("e", ASCENDING), ("t", DESCENDING)], name="as_of"
        )
    return info


def registered(docs: list[dict[str, Any]]) -> dict[tuple[str, int], GroupInfo]:
    """Registry documents by (group, version)."""
    infos = (GroupInfo.from_doc(d) for d in docs)
    return {(i.group, i.version): i for i in infos}
