"""bench/results/latest.md from the JSON results, with the targets and whether they hold."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path

import confluent_kafka


def _load(results: Path, name: str) -> list[dict[str, object]]:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else []


def write_report(results: Path) -> None:
    runs = _load(results, "throughput")
    recovery = _load(results, "recovery")
    memory = _load(results, "memory")
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
        f"Python {platform.python_version()}, confluent-kafka {confluent_kafka.version()[0]}, "
        "Kafka 4.3.1 (devstack), FerretDB 1.24.2 on SQLite (devstack, patched).",
        "",
    ]
    medians: dict[str, float] = {}
    if runs:
        names = list(dict.fromkeys(str(r["contender"]) for r in runs))
        rates = {n: [float(r["events_per_s"]) for r in runs if r["contender"] == n] for n in names}  # type: ignore[arg-type]
        correct = {n: all(bool(r["correct"]) for r in runs if r["contender"] == n) for n in names}
        medians = {n: statistics.median(v) for n, v in rates.items()}
        events = runs[0]["events"]
        lines += [
            f"## Throughput ({events:,} events, {len(rates[names[0]])} interleaved runs)",
            "",
            "| contender | events/s median | min-max | to ceiling | to Quix | correct |",
            "|---|---:|---:|---:|---:|---|",
        ]

        def ratio(n: str, to: str) -> str:
            return f"{medians[n] / medians[to]:.2f}" if to in medians else "-"

        for n in names:
            lines.append(
                f"| {n} | {medians[n]:,.0f} | {min(rates[n]):,.0f}-{max(rates[n]):,.0f} | "
                f"{ratio(n, 'ceiling')} | {ratio(n, 'quixstreams')} | "
                f"{'yes' if correct[n] else 'NO'} |"
            )
        if "tidemark-tumbling" in names:
            lines += [
                "",
                "tidemark-tumbling: the same count and sum per user in 10 s tumbling windows of "
                "the Kafka record timestamp, `emit: on_update`; correct when each key's last "
                "outputs per window sum to its totals.",
            ]
        lines += ["", "![throughput](throughput.png)", ""]
    if recovery:
        sizes = sorted({int(r["keys"]) for r in recovery})  # type: ignore[call-overload]
        labels = list(dict.fromkeys(str(r["contender"]) for r in recovery))
        lines += [
            "## Recovery: seconds from restart after SIGKILL to the first new output",
            "",
            "| contender | " + " | ".join(f"{s:,} keys" for s in sizes) + " |",
            "|---|" + "---:|" * len(sizes),
        ]
        for label in labels:
            cells = []
            for size in sizes:
                found = [r for r in recovery if r["contender"] == label and r["keys"] == size]
                cells.append(f"{float(found[0]['seconds']):.1f}" if found else "-")  # type: ignore[arg-type]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "![recovery](recovery.png)", ""]
    if memory:
        lines += [
            "## Memory: peak RSS of one Tidemark worker, cache bound fixed",
            "",
            "| distinct keys | cache entries | peak RSS (MB) |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {m['keys']:,} | {m['cache_entries']:,} | {float(m['peak_rss_mb']):.0f} |"
            for m in memory
        ]  # type: ignore[arg-type]
        lines += ["", "![memory](memory.png)", ""]
    snapshots = _load(results, "snapshots")
    if snapshots:
        lines += [
            "## Snapshots: one partition, full snapshot and restore (medians)",
            "",
            "| keys | runs | take (s) | verify (s) | restore (s) | longest loop stall (ms) | "
            "payload (MB) | chunks |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['keys']:,} | {r['runs']} | {float(r['take_s']):.1f} | "  # type: ignore[arg-type]
            f"{float(r['verify_s']):.2f} | {float(r['restore_s']):.1f} | "  # type: ignore[arg-type]
            f"{float(r['longest_loop_stall_ms']):.0f} | {int(r['bytes']) / 1e6:.1f} | "  # type: ignore[call-overload]
            f"{r['chunks']} |"
            for r in snapshots
        ]
        lines.append("")
    lines += ["## Targets", "", *_targets(medians, recovery, memory)]
    (results / "latest.md").write_text("\n".join(lines) + "\n")


def _targets(
    medians: dict[str, float], recovery: list[dict[str, object]], memory: list[dict[str, object]]
) -> list[str]:
    out = []
    if {"tidemark", "quixstreams", "ceiling"} <= medians.keys():
        q = medians["tidemark"] / medians["quixstreams"]
        c = medians["tidemark"] / medians["ceiling"]
        out.append(
            f"- Tidemark >= 3x Quix Streams: {q:.2f}x, {'holds' if q >= 3 else 'does not hold'}"
        )
        out.append(
            f"- Tidemark >= 50% of the ceiling: {c:.0%}, {'holds' if c >= 0.5 else 'does not hold'}"
        )
    tide = {int(r["keys"]): float(r["seconds"]) for r in recovery if r["contender"] == "tidemark"}  # type: ignore[call-overload, arg-type]
    if tide:
        lo, hi = tide[min(tide)], tide[max(tide)]
        out.append(
            f"- Recovery flat ({max(tide):,} keys within 2x of {min(tide):,}): "
            f"{hi:.1f}s vs {lo:.1f}s, {'holds' if hi <= 2 * lo else 'does not hold'}"
        )
    if len(memory) >= 2:
        a, b = float(memory[0]["peak_rss_mb"]), float(memory[-1]["peak_rss_mb"])  # type: ignore[arg-type]
        out.append(
            f"- Peak RSS flat within 20% for 10x keys: {a:.0f} MB vs {b:.0f} MB, "
            f"{'holds' if b <= 1.2 * a else 'does not hold'}"
        )
    return out
