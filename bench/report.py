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


EOS_QUIX = ("quixstreams", "quixstreams-1s")  # "to Quix": the faster of these


def throughput_table(
    runs: list[dict[str, object]],
) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """The throughput table (medians of the runs, CPU per event of each process), the
    median events/s and the median CPU µs per event of each contender's own process."""
    names = list(dict.fromkeys(str(r["contender"]) for r in runs))
    by = {n: [r for r in runs if r["contender"] == n] for n in names}

    def median(n: str, field: str, per_event: bool = False) -> float:
        values = [float(r.get(field, 0.0)) for r in by[n]]  # type: ignore[arg-type]
        scale = 1e6 / float(by[n][0]["events"]) if per_event else 1.0  # type: ignore[arg-type]
        return statistics.median(values) * scale

    medians = {n: median(n, "events_per_s") for n in names}
    quix = max((medians[q] for q in EOS_QUIX if q in medians), default=None)

    def ratio(n: str, to: float | None) -> str:
        return f"{medians[n] / to:.2f}" if to else "-"

    lines = [
        f"## Throughput ({int(by[names[0]][0]['events']):,} events, "  # type: ignore[call-overload]
        f"{len(by[names[0]])} interleaved runs)",
        "",
        "CPU is µs per event over the run (median): the contender's own process, the broker's "
        'and the MongoDB-protocol server\'s. "to Quix": to the faster exactly-once Quix run.',
        "",
        "| contender | events/s median | min-max | to ceiling | to Quix | CPU own | CPU broker "
        "| CPU MongoDB | correct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in names:
        rates = [float(r["events_per_s"]) for r in by[n]]  # type: ignore[arg-type]
        correct = all(bool(r["correct"]) for r in by[n])
        lines.append(
            f"| {n} | {medians[n]:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | "
            f"{ratio(n, medians.get('ceiling'))} | {ratio(n, quix)} | "
            f"{median(n, 'cpu_s', True):.1f} | {median(n, 'broker_cpu_s', True):.1f} | "
            f"{median(n, 'mongo_cpu_s', True):.1f} | {'yes' if correct else 'NO'} |"
        )
    return lines, medians, {n: median(n, "cpu_s", True) for n in names}


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
    cpu: dict[str, float] = {}
    if runs:
        table, medians, cpu = throughput_table(runs)
        lines += table
        if "tidemark-tumbling" in medians:
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
        bounded = [r for r in snapshots if "server_insert_s" in r]
        if bounded:
            lines += [
                "",
                "What the MongoDB server alone takes for the same documents (insert them, read "
                "them back, delete them), and how far snapshot and restore are from it:",
                "",
                "| keys | insert (s) | scan (s) | delete (s) | take / scan | "
                "restore / (delete + insert) |",
                "|---:|---:|---:|---:|---:|---:|",
            ]
            for r in bounded:
                insert, scan, delete = (
                    float(r[f"server_{w}_s"])  # type: ignore[arg-type]
                    for w in ("insert", "scan", "delete")
                )
                take, restore = float(r["take_s"]), float(r["restore_s"])  # type: ignore[arg-type]
                lines.append(
                    f"| {r['keys']:,} | {insert:.1f} | {scan:.1f} | {delete:.1f} | "
                    f"{take / scan:.1f}x | {restore / (delete + insert):.1f}x |"
                )
        lines.append("")
    lines += ["## Targets", "", *_targets(medians, cpu, recovery, memory)]
    (results / "latest.md").write_text("\n".join(lines) + "\n")


def _targets(
    medians: dict[str, float],
    cpu: dict[str, float],
    recovery: list[dict[str, object]],
    memory: list[dict[str, object]],
) -> list[str]:
    out = []
    quix = max((medians[q] for q in EOS_QUIX if q in medians), default=None)
    if quix and {"tidemark", "ceiling"} <= medians.keys():
        q = medians["tidemark"] / quix
        c = medians["tidemark"] / medians["ceiling"]
        out.append(
            f"- Tidemark >= 3x Quix Streams: {q:.2f}x, {'holds' if q >= 3 else 'does not hold'}"
        )
        out.append(
            f"- Tidemark >= 50% of the ceiling: {c:.0%}, {'holds' if c >= 0.5 else 'does not hold'}"
        )
    if {"tidemark", "ceiling"} <= cpu.keys() and cpu["ceiling"]:
        r = cpu["tidemark"] / cpu["ceiling"]
        out.append(
            f"- Worker CPU per event <= 1.5x the ceiling's: {cpu['tidemark']:.1f} vs "
            f"{cpu['ceiling']:.1f} µs, {r:.2f}x, {'holds' if r <= 1.5 else 'does not hold'}"
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
