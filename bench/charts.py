"""PNG charts from the JSON results a run wrote (those present). Runs in bench/.venv-quix,
which has matplotlib. Usage: charts.py RESULTS_DIR WORKLOAD (as the throughput title says it)."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(results: Path, workload: str) -> None:
    if (results / "throughput.json").exists():
        throughput(results, workload)
    if (results / "recovery.json").exists():
        recovery(results)
    if (results / "memory.json").exists():
        memory(results)


def throughput(results: Path, workload: str) -> None:
    runs = json.loads((results / "throughput.json").read_text())
    colors = {
        "ceiling": "#888888",
        "tidemark": "#1f77b4",
        "tidemark-tumbling": "#2ca02c",
        "quixstreams": "#ff7f0e",
    }
    order = list(colors)
    names = sorted(
        {r["contender"] for r in runs},
        key=lambda n: order.index(n) if n in order else len(order),
    )
    medians = [
        statistics.median(r["events_per_s"] for r in runs if r["contender"] == n) for n in names
    ]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, medians, color=[colors.get(n, "#9467bd") for n in names])
    ax.set_ylabel("events/s (median of runs)")
    ax.set_title(f"Throughput: {workload}, count+sum per key")
    fig.tight_layout()
    fig.savefig(results / "throughput.png", dpi=120)


def recovery(results: Path) -> None:
    runs = json.loads((results / "recovery.json").read_text())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label in sorted({r["contender"] for r in runs}):
        points = [
            (r["keys"], r["seconds"])
            for r in runs
            if r["contender"] == label and not math.isnan(r["seconds"])
        ]
        if points:
            ax.plot(*zip(*sorted(points), strict=True), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("keys in state")
    ax.set_ylabel("seconds from restart to first new output")
    ax.set_title("Recovery after SIGKILL")
    ax.legend()
    fig.tight_layout()
    fig.savefig(results / "recovery.png", dpi=120)


def memory(results: Path) -> None:
    peaks = json.loads((results / "memory.json").read_text())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(
        [f"{m['keys']:,} keys" for m in peaks], [m["peak_rss_mb"] for m in peaks], color="#1f77b4"
    )
    ax.set_ylabel("peak RSS (MB)")
    ax.set_title(f"Tidemark worker memory, cache bound {peaks[0]['cache_entries']:,} entries")
    fig.tight_layout()
    fig.savefig(results / "memory.png", dpi=120)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
