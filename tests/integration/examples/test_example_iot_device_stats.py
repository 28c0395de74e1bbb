"""config/examples/iot-device-stats.yaml on a real worker: resent readings dropped by
`dedupe`, then the exact 5-minute hopping windows (every minute, grace 30s) per device; the
late reading dead-lettered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.integration.examples.example_runs import (
    at,
    by_key,
    dead_letters,
    local_example,
    run_example,
    window,
)
from tests.support import Services, TopicFactory

pytestmark = pytest.mark.integration


def reading(device: str, reading_id: str, minutes: float, temperature: float) -> dict[str, Any]:
    return {
        "device_id": device,
        "reading_id": reading_id,
        "ts": at(minutes),
        "temperature": temperature,
    }


# In the order produced; minutes after T0. A window [s, s + 5) closes once stream time
# (st, the largest event time yet) reaches s + 5.5.
READINGS = [
    reading("d1", "r1", 0 + 10 / 60, 20.5),  # 0
    reading("d1", "r2", 1 + 10 / 60, 22.0),
    reading("d1", "r1", 0 + 10 / 60, 20.5),  # resent: dropped by dedupe
    reading("d2", "r3", 4 + 20 / 60, 15.0),  # st 4:20: d1's windows from -4 to -2 close
    reading("d2", "r4", 5 + 20 / 60, 16.0),  # st 5:20: and -1
    # 5: 20 seconds behind st, in windows [0, 5) to [4, 9): [0, 5) would be closed
    # without the grace, and takes it
    reading("d1", "r5", 4 + 55 / 60, 25.5),
    reading("d2", "r6", 8, 17.0),  # st 8: windows starting up to 2 close
    reading("d1", "r7", 1.5, 30.0),  # 7: late for all its windows [-3, 2) to [1, 6)
    reading("d2", "r4", 5 + 20 / 60, 16.0),  # resent: dropped
    reading("d9", "r9", 60, 10.0),  # st 60: closes the rest; d9's own stay open
]


def windows(
    first: int, last: int, readings: int, total: float, low: float, high: float
) -> list[dict[str, Any]]:
    """The outputs of the windows starting `first` to `last` minutes after T0, alike."""
    values = {
        "readings": readings,
        "avg_temperature": total / readings,
        "min_temperature": low,
        "max_temperature": high,
    }
    return [{**values, **window(s, s + 5)} for s in range(first, last + 1)]


EXPECTED = {
    "d1": windows(-4, -4, 1, 20.5, 20.5, 20.5)  # r1
    + windows(-3, -1, 2, 42.5, 20.5, 22.0)  # r1, r2
    + windows(0, 0, 3, 68.0, 20.5, 25.5)  # r1, r2, r5 (within grace)
    + windows(1, 1, 2, 47.5, 22.0, 25.5)  # r2, r5
    + windows(2, 4, 1, 25.5, 25.5, 25.5),  # r5
    "d2": windows(0, 0, 1, 15.0, 15.0, 15.0)  # r3
    + windows(1, 3, 2, 31.0, 15.0, 16.0)  # r3, r4
    + windows(4, 4, 3, 48.0, 15.0, 17.0)  # r3, r4, r6
    + windows(5, 5, 2, 33.0, 16.0, 17.0)  # r4, r6
    + windows(6, 8, 1, 17.0, 17.0, 17.0),  # r6
}


def test_device_stats_are_exact(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    example = local_example("iot-device-stats", tmp_path, services, sync_db.name, make_topic)
    sink, letters = example.topics["iot-device-stats"], example.dead_letters
    found = run_example(
        example,
        services,
        sync_db,
        "device_id",
        READINGS,
        {sink: 18, letters: 1},
        tmp_path / "w.log",
    )

    got = by_key(found[sink])
    assert {key: [value for value, _ in outputs] for key, outputs in got.items()} == EXPECTED
    [(offset, reason, message)] = dead_letters(found[letters])
    assert (offset, reason) == (7, "late")
    assert "past every window's grace" in message, message
