"""The Quix Streams contender: the same aggregation, exactly-once. Runs in bench/.venv-quix.

Usage: python bench/quix_app.py BOOTSTRAP SOURCE SINK GROUP STATE_DIR [GUARANTEE [COMMIT_S]]

GUARANTEE is `exactly-once` (default) or `at-least-once`; COMMIT_S the commit interval in
seconds (default: Quix Streams' own, 5 s), so the peer can be measured at its best.
"""

from __future__ import annotations

import sys
from typing import Any

from quixstreams import Application, State


def aggregate(value: dict[str, Any], state: State) -> dict[str, int]:
    count = state.get("count", 0) + 1
    total = state.get("total", 0) + value["amount"]
    state.set("count", count)
    state.set("total", total)
    return {"count": count, "total": total}


def main() -> None:
    bootstrap, source, sink, group, state_dir = sys.argv[1:6]
    guarantee = sys.argv[6] if len(sys.argv) > 6 else "exactly-once"
    interval = {"commit_interval": float(sys.argv[7])} if len(sys.argv) > 7 else {}
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        state_dir=state_dir,
        **interval,
        loglevel="WARNING",
        # The same failure detection and transaction timeout as the Tidemark contender.
        consumer_extra_config={"session.timeout.ms": 6000},
        producer_extra_config={"transaction.timeout.ms": 10000},
    )
    source_topic = app.topic(source, value_deserializer="json", key_deserializer="str")
    sink_topic = app.topic(sink, value_serializer="json", key_serializer="str")
    sdf = app.dataframe(source_topic)
    sdf = sdf.apply(aggregate, stateful=True)
    sdf.to_topic(sink_topic)
    app.run()


if __name__ == "__main__":
    main()
