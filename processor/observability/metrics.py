"""Prometheus metrics of a worker; served over HTTP when `tidemark run --metrics-port` is given."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter("tidemark_events", "Source records processed", ["topology"])
OUTPUTS = Counter("tidemark_outputs", "Records produced to the sink", ["topology"])
DEAD_LETTERS = Counter("tidemark_dead_letters", "Records sent to dead letters", ["topology"])
COMMITS = Counter("tidemark_commits", "Completed commits of the protocol", ["topology"])
FENCED = Counter(
    "tidemark_fenced", "Partitions dropped because a newer owner took them", ["topology"]
)
COMMIT_SECONDS = Histogram("tidemark_commit_seconds", "Duration of one commit", ["topology"])
SNAPSHOTS = Counter("tidemark_snapshots", "Snapshots taken by this worker", ["topology"])
SNAPSHOT_SECONDS = Histogram(
    "tidemark_snapshot_seconds", "Duration of one snapshot (write and prune)", ["topology"]
)
