"""What a worker's probes answer (`/healthz`, `/readyz`), written by its loop.

Alive: the processing loop turned within `liveness_bound` (a loop stuck in a call that
never returns is dead to Kubernetes, which restarts it; recovery is exact). Ready: the
worker joined its consumer group (an assignment arrived, possibly empty: a member beyond
the partition count is a healthy standby, and a rolling update must be able to finish)
and is not waiting out a MongoDB or Kafka outage. Read from the HTTP thread: every field
is a single value replaced whole, so no lock is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tidemark.config import Topology
from tidemark.processor.observability import metrics
from tidemark.processor.observability.http import Verdict


def liveness_bound(topology: Topology) -> float:
    """Seconds without a turn of the loop after which the worker counts as stuck: longer
    than a commit that waits for a slow MongoDB within its retry budget."""
    return max(30.0, 3 * topology.checkpoint.interval)


class Health:
    """A worker's liveness and readiness."""

    def __init__(self, topology: Topology, assigned: Callable[[], set[int]]) -> None:
        self.bound = liveness_bound(topology)
        self.turned_at = time.monotonic()
        self.joined = False
        self.waiting_for: str | None = None  # a dependency being waited out
        self.stopping = False
        self._assigned = assigned
        labels = {"topology": topology.name}
        metrics.READY.labels(**labels).set_function(lambda: float(self.ready().ok))
        metrics.ASSIGNED.labels(**labels).set_function(lambda: float(len(self._assigned())))

    def turn(self) -> None:
        """The loop turned: it is alive."""
        self.turned_at = time.monotonic()

    def turned_within(self, seconds: float) -> bool:
        return time.monotonic() - self.turned_at < seconds

    def live(self) -> Verdict:
        idle = round(time.monotonic() - self.turned_at, 1)
        return Verdict(self.turned_within(self.bound), {"loop_idle_s": idle, "bound_s": self.bound})

    def ready(self) -> Verdict:
        detail = {
            "joined": self.joined,
            "waiting_for": self.waiting_for,
            "stopping": self.stopping,
            "partitions": sorted(self._assigned()),
        }
        ok = self.joined and self.waiting_for is None and not self.stopping
        return Verdict(ok and self.live().ok, detail)
