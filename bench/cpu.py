"""CPU seconds per process, from /proc: a contender's, and the broker's and the MongoDB-protocol
server's over the same run, so a run shows where its CPU went, not only how fast it was."""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
BROKER = "kafka.Kafka"  # in the broker's java command line
MONGO_SERVER = "ferretdb"


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU of `pid` so far (0 when it is gone or None)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, from `state`
    return (int(fields[11]) + int(fields[12])) / _TICK


def find(pattern: str) -> int | None:
    """The first process whose command line contains `pattern`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in cmdline:
            return int(entry.name)
    return None


class Meter:
    """CPU seconds of a process, the broker and the MongoDB-protocol server since `start()`."""

    def __init__(self, pid: int) -> None:
        self._pids = (pid, find(BROKER), find(MONGO_SERVER))
        self._at = (0.0, 0.0, 0.0)

    def start(self) -> None:
        self._at = tuple(cpu_seconds(p) for p in self._pids)  # type: ignore[assignment]

    def used(self) -> tuple[float, float, float]:
        """(process, broker, MongoDB server) CPU seconds since `start()`."""
        own, broker, mongo = (
            cpu_seconds(p) - at for p, at in zip(self._pids, self._at, strict=True)
        )
        return own, broker, mongo


def wait_idle(most: float = 30.0, window: float = 0.5, busy: float = 0.1) -> None:
    """Wait (at most `most` seconds) until the broker and the MongoDB server use less than
    `busy` of a core over `window`: the previous contender's last writes are done, and
    neither its CPU nor its I/O is counted against the next one."""
    pids = [find(BROKER), find(MONGO_SERVER)]
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(window)
        if sum(cpu_seconds(p) for p in pids) - before < busy * window:
            return
