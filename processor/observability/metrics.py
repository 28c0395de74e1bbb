"""Prometheus metrics of a worker, served on `tidemark run --metrics-port` (`http.py`).

Names follow Prometheus conventions: counters end in `_total` (the client adds it),
durations are `_seconds`, sizes `_bytes`. Every series has a `topology` label; those about
one partition also have `partition`. Hot paths bind label children once per partition and
add per batch, never per record.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

T, P = "topology", "partition"
# Commits are tens of milliseconds locally and seconds when a dependency is slow.
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000)

RECORDS_IN = Counter("tidemark_records_in", "Source records processed", [T, P])
RECORDS_OUT = Counter("tidemark_records_out", "Records produced to the sink", [T, P])
DEAD_LETTERS = Counter(
    "tidemark_dead_letters", "Records sent to dead letters, by error class", [T, P, "reason"]
)
LATE_DROPPED = Counter(
    "tidemark_late_records_dropped", "Records too late for their windows, dropped", [T, P]
)
DUPLICATES_DROPPED = Counter(
    "tidemark_duplicates_dropped", "Records a `dedupe` step dropped as duplicates", [T, P]
)
CONSUMER_LAG = Gauge(
    "tidemark_consumer_lag_records",
    "Log end minus the committed offset (C), after a commit",
    [T, P],
)
BATCH_SECONDS = Histogram(
    "tidemark_batch_seconds", "Processing one partition's batch", [T], buckets=STEP_BUCKETS
)
COMMITS = Counter("tidemark_commits", "Kafka transactions committed by the protocol", [T])
COMMIT_SECONDS = Histogram(
    "tidemark_commit_seconds",
    "Duration of each step of the commit protocol (and `total` for steps 1 to 3)",
    [T, "step"],
    buckets=STEP_BUCKETS,
)
CACHE_HITS = Counter("tidemark_state_cache_hits", "State keys found in the cache", [T])
CACHE_MISSES = Counter("tidemark_state_cache_misses", "State keys read from MongoDB", [T])
CACHE_EVICTIONS = Counter("tidemark_state_cache_evictions", "State keys evicted", [T])
FLUSH_DOCUMENTS = Histogram(
    "tidemark_state_flush_documents", "Documents written per state flush", [T], buckets=SIZE_BUCKETS
)
FENCED = Counter("tidemark_fenced", "Partitions dropped because a newer owner took them", [T, P])
RECOVERIES = Counter("tidemark_recoveries", "Partitions recovered from their checkpoint", [T])
RECOVERY_SECONDS = Histogram(
    "tidemark_recovery_seconds",
    "Recovering one partition (acquire and read)",
    [T],
    buckets=STEP_BUCKETS,
)
REPLAYED = Counter("tidemark_replayed_records", "Records reprocessed by `tidemark replay`", [T, P])
REPLAY_PROGRESS = Gauge(
    "tidemark_replay_progress_ratio", "Share of the replay's range reprocessed", [T, P]
)
SNAPSHOTS = Counter("tidemark_snapshots", "Snapshots taken", [T])
SNAPSHOT_SECONDS = Histogram(
    "tidemark_snapshot_seconds",
    "Taking one snapshot (write and prune)",
    [T],
    buckets=STEP_BUCKETS,
)
SNAPSHOT_BYTES = Counter("tidemark_snapshot_bytes", "Compressed snapshot payload written", [T])
FEATURE_ROWS = Counter(
    "tidemark_feature_rows",
    "Feature rows written (stored) or refused as older than the stored value (stale)",
    [T, "group", "version", "outcome"],
)
FEATURE_FRESHNESS = Histogram(
    "tidemark_feature_freshness_seconds",
    "Event time to readable of each stored feature row",
    [T, "group", "version"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
OUTAGES = Counter(
    "tidemark_dependency_outages", "Outages of MongoDB or Kafka waited out", [T, "dependency"]
)
ASSIGNED = Gauge("tidemark_assigned_partitions", "Partitions assigned to this worker", [T])
READY = Gauge("tidemark_ready", "1 when /readyz answers ready", [T])


def exposed_names() -> set[str]:
    """Every sample name a scrape can show (`_total`, `_bucket`, `_sum`, `_count`, …)."""
    names: set[str] = set()
    for metric in list(REGISTRY._collector_to_names):
        if isinstance(metric, MetricWrapperBase):
            names.update(REGISTRY._collector_to_names[metric])
    return {n for n in names if n.startswith("tidemark_")}
