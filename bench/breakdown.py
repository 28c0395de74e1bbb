"""Where a worker's CPU goes, by stage of an event, from a py-spy profile.

    py-spy record --gil -p WORKER_PID -d 10 -r 250 -f raw -o profile.txt
    python -m bench.breakdown profile.txt

`--gil` samples only the thread that holds the GIL, so the shares follow CPU, not waits.
Each sample is charged to the first stage, innermost frame first, whose function appears in
its stack; the rest of the event loop and the client threads are "other".
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# (stage, functions as py-spy names them), checked innermost frame first.
STAGES = [
    (
        "consume and decode",
        ("by_partition", "Decoder.decode", "Decoder.folded", "Decoder._body", "consume"),
    ),
    ("key extraction", ("key_of", "key_string", "keyed")),
    (
        "state get/put",
        (
            "OperatorState.get",
            "OperatorState.put",
            "OperatorState.read",
            "OperatorState.write",
            "PartitionStore.prefetch",
            "PartitionStore.read",
            "PartitionStore.write",
            "KeyedAggregate.latest",
            "KeyedAggregate.unheld",
        ),
    ),
    (
        "aggregate (C: and encoding)",
        (
            "KeyedAggregate.apply",
            "KeyedAggregate.fold_batch",
            "KeyedAggregate.fold_encoded",
            "Accumulators",
            "Aggregation.",
        ),
    ),
    ("output encoding", ("BatchProcessor._emit", "BatchProcessor._fold")),
    ("produce", ("Transaction.produce", "Transaction.produce_all")),
    ("commit", ("Committer.commit", "Committer._commit_kafka", "Transaction.commit")),
    ("state flush", ("_checkpoint_state", "_Cut.take", "PartitionStore.flush", "send_updates")),
    ("pipeline (other)", ("Pipeline.process", "BatchProcessor.run")),
]


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        name = frame.split(" (")[0]
        for stage, functions in STAGES:
            if any(name == f or name.startswith(f) for f in functions):
                return stage
    return "other (event loop, client threads)"


def breakdown(path: Path) -> dict[str, float]:
    """Share of the samples per stage."""
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        if line.strip():
            stack, _, n = line.rpartition(" ")
            counts[stage_of(stack.split(";"))] += int(n)
    total = sum(counts.values())
    return {
        stage: counts[stage] / total
        for stage, _ in [*STAGES, ("other (event loop, client threads)", ())]
    }


def main() -> int:
    for path in sys.argv[1:]:
        print(f"{path}:")
        for stage, share in breakdown(Path(path)).items():
            print(f"  {stage:<36} {share:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
