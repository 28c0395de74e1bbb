"""Prometheus gauges of the serving process: freshness, drift and the cache, per group."""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Gauge
from pymongo.errors import PyMongoError

from tidemark.features.client import AsyncFeatureClient
from tidemark.features.drift import drift, freshness, sample
from tidemark.features.registry import GroupInfo

log = structlog.get_logger("tidemark.serve")
_GROUP = ["group", "version"]
ENTITIES = Gauge("tidemark_feature_entities", "Entities with a value", _GROUP)
NEWEST_AGE = Gauge(
    "tidemark_feature_newest_age_seconds", "Wall clock minus the newest event time", _GROUP
)
WRITE_LAG = Gauge(
    "tidemark_feature_write_lag_seconds",
    "Event time to readable over the latest 100 writes",
    [*_GROUP, "quantile"],
)
DRIFT = Gauge(
    "tidemark_feature_drift",
    "Drift of a feature against its recorded baseline (ks, psi)",
    [*_GROUP, "feature", "statistic"],
)
CACHE_HIT_RATIO = Gauge("tidemark_feature_cache_hit_ratio", "Lookups the cache answered")


class Monitor:
    """Refreshes the gauges from MongoDB; an outage is logged and waited out."""

    def __init__(self, client: AsyncFeatureClient) -> None:
        self._client = client

    async def forever(self, every: float) -> None:
        """Refresh every `every` seconds, the first time after one interval: a pass scans
        the group on a server without indexes on its fields, so it stays off start-up."""
        while True:
            await asyncio.sleep(every)
            try:
                for info in await self._client.groups():
                    await self.observe(info)
            except PyMongoError as exc:
                log.warning("monitor_skipped", error=type(exc).__name__)
            CACHE_HIT_RATIO.set(self._client.cache_stats.hit_rate)

    async def observe(self, info: GroupInfo) -> None:
        labels = (info.group, str(info.version))
        db = self._client.database
        fresh = await freshness(db, info)
        ENTITIES.labels(*labels).set(fresh["entities"])
        if fresh["newest_age_s"] is not None:
            NEWEST_AGE.labels(*labels).set(fresh["newest_age_s"])
            WRITE_LAG.labels(*labels, "0.5").set(fresh["lag_p50_s"])
            WRITE_LAG.labels(*labels, "1").set(fresh["lag_max_s"])
        if info.baseline:
            for feature, values in drift(info, await sample(db, info)).items():
                for statistic in ("ks", "psi"):
                    if statistic in values:
                        DRIFT.labels(*labels, feature, statistic).set(values[statistic])
