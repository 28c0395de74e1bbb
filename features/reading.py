"""What the sync and async clients share: resolving a request, the cache, building answers.

The clients only do the I/O: `Reader.plan` says which documents to read, `Reader.answer`
turns what was read (plus what the cache held) into `FeatureVector`s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cachetools import TTLCache

from tidemark.config.errors import TidemarkError
from tidemark.features.materialize import row_id
from tidemark.features.registry import GroupInfo, registered

Status = Literal["ok", "missing", "expired"]
MAX_ENTITIES = 1000  # per request: a bigger batch is a scan, not a lookup


class FeatureRequestError(TidemarkError):
    """A request that cannot be answered as asked; `status` is its HTTP status."""

    status = 400


class UnknownGroup(FeatureRequestError):
    status = 404


@dataclass(frozen=True)
class FeatureVector:
    """One entity's features as served: `values` are None where missing or expired."""

    entity: str
    group: str
    version: int
    status: Status
    values: dict[str, Any]
    event_time: int | None = None  # epoch ms the values reflect
    staleness: float | None = None  # seconds from that event time to the read (or `as_of`)

    def to_json(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "version": self.version,
            "status": self.status,
            "event_time": self.event_time,
            "staleness_seconds": self.staleness,
            "features": self.values,
        }


@dataclass(frozen=True)
class Plan:
    """A resolved request: what to read, and what the cache already answered."""

    info: GroupInfo
    features: list[str]
    entities: list[str]
    as_of: int | None
    cached: dict[str, dict[str, Any] | None]
    to_read: list[str]  # document ids of the current collection (`as_of`: entity ids)


@dataclass
class CacheStats:
    """Lookups the cache answered and those it did not, since the client was made."""

    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass
class Reader:
    """The registry as last read and a bounded TTL cache of current documents (none with a
    `cache_ttl` of 0)."""

    cache_ttl: float = 1.0
    cache_entries: int = 100_000
    registry_ttl: float = 10.0
    stats: CacheStats = field(default_factory=CacheStats)
    groups: dict[tuple[str, int], GroupInfo] = field(default_factory=dict)
    _registry_at: float = -1e9

    def __post_init__(self) -> None:
        # Documents by id, None for "no document"; a value expires by the group's TTL at
        # every answer, whatever the cache holds.
        self._cache: TTLCache[str, dict[str, Any] | None] = TTLCache(
            self.cache_entries, self.cache_ttl
        )

    def registry_due(self) -> bool:
        return time.monotonic() - self._registry_at >= self.registry_ttl

    def set_registry(self, docs: list[dict[str, Any]]) -> None:
        self.groups = registered(docs)
        self._registry_at = time.monotonic()

    def info(self, group: str, version: int | None = None) -> GroupInfo:
        """The (group, version) asked for; the latest version when `version` is None."""
        versions = sorted(v for g, v in self.groups if g == group)
        if not versions:
            known = sorted({g for g, _ in self.groups})
            raise UnknownGroup(f"unknown feature group {group!r} (known: {known})")
        if version is None:
            version = versions[-1]
        if version not in versions:
            raise UnknownGroup(f"group {group!r} has no version {version} (has: {versions})")
        return self.groups[group, version]

    def plan(
        self,
        group: str,
        entities: str | Sequence[str],
        features: Sequence[str] | None = None,
        version: int | None = None,
        as_of: int | None = None,
    ) -> Plan:
        info = self.info(group, version)
        ids = [entities] if isinstance(entities, str) else list(dict.fromkeys(entities))
        if not ids or len(ids) > MAX_ENTITIES or not all(isinstance(e, str) and e for e in ids):
            raise FeatureRequestError(f"ask for 1 to {MAX_ENTITIES} non-empty entity ids")
        wanted = list(info.features) if features is None else list(features)
        unknown = [f for f in wanted if f not in info.features]
        if unknown or not wanted:
            raise FeatureRequestError(
                f"unknown features {unknown} of group {group!r} v{info.version} "
                f"(has: {sorted(info.features)})"
            )
        if as_of is not None:
            if info.history is None:
                raise FeatureRequestError(
                    f"group {group!r} v{info.version} keeps no history: as_of needs `history`"
                )
            return Plan(info, wanted, ids, as_of, {}, ids)
        cached: dict[str, dict[str, Any] | None] = {}
        to_read = []
        for entity in ids:
            key = row_id(info.version, entity)
            doc = self._cache.get(key, _MISS) if self.cache_ttl > 0 else _MISS
            if doc is _MISS:
                to_read.append(key)
            else:
                cached[entity] = doc
        self.stats.hits += len(cached)
        self.stats.misses += len(to_read)
        return Plan(info, wanted, ids, None, cached, to_read)

    def answer(self, plan: Plan, docs: list[dict[str, Any]]) -> list[FeatureVector]:
        """The vectors of `plan` from the documents read for it, in the order asked."""
        found = dict(plan.cached)
        read = {d["e"]: d for d in docs}
        for entity in plan.entities:
            if entity in plan.cached:
                continue
            doc = found[entity] = read.get(entity)
            if plan.as_of is None and self.cache_ttl > 0:
                self._cache[row_id(plan.info.version, entity)] = doc
        now = plan.as_of if plan.as_of is not None else int(time.time() * 1000)
        return [_vector(plan, e, found.get(e), now) for e in plan.entities]


_MISS: dict[str, Any] = {}


def _vector(plan: Plan, entity: str, doc: dict[str, Any] | None, now: int) -> FeatureVector:
    info = plan.info
    if doc is None:
        empty = dict.fromkeys(plan.features)
        return FeatureVector(entity, info.group, info.version, "missing", empty)
    staleness = (now - doc["t"]) / 1000
    if info.ttl is not None and staleness > info.ttl:
        empty = dict.fromkeys(plan.features)
        return FeatureVector(
            entity, info.group, info.version, "expired", empty, doc["t"], staleness
        )
    values = {f: doc["v"].get(f) for f in plan.features}
    return FeatureVector(entity, info.group, info.version, "ok", values, doc["t"], staleness)


def as_of_query(info: GroupInfo, entity: str, as_of: int) -> dict[str, Any]:
    """The history rows of `entity` at or before `as_of`; the newest (by `AS_OF_SORT`) is
    the value that was current then."""
    return {"ver": info.version, "e": entity, "t": {"$lte": as_of}}


def by_ids(ids: list[str]) -> dict[str, Any]:
    return {"_id": {"$in": ids}}


AS_OF_SORT = [("t", -1), ("p", -1), ("off", -1)]
PROJECTION = {"e": 1, "v": 1, "t": 1}
