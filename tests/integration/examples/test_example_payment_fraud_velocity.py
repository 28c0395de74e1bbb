"""config/examples/payment-fraud-velocity.yaml on a real worker: crafted payments in, every
10-minute hopping window (every minute, grace 30s) per card out, on the alerts topic when
3+ countries or 10+ payments, on the sink otherwise; the late payment dead-lettered."""

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
A, B, C = "card-1111", "card-2222", "card-3333"


def pay(card: str, amount: float, merchant: str, country: str, minutes: float) -> dict[str, Any]:
    return {
        "card_id": card,
        "amount": amount,
        "merchant_id": merchant,
        "country": country,
        "ts": at(minutes),
    }


# In the order produced; minutes after T0. A window [s, s + 10) closes once stream time
# (st, the largest event time yet) reaches s + 10.5.
PAYMENTS = [
    pay(A, 25.0, "m-101", "NL", 0 + 10 / 60),  # 0: A, three countries in 100 seconds
    pay(A, 40.0, "m-202", "DE", 1 + 20 / 60),
    pay(A, 12.5, "m-303", "FR", 1 + 50 / 60),
    pay(B, 10.0, "m-101", "NL", 3),  # 3: B, an ordinary card
    pay(B, 20.0, "m-404", "NL", 6.5),
    pay(B, 7.5, "m-101", "NL", 11 + 20 / 60),  # st 11:20: windows starting up to 0 close
    # 6: 30 seconds behind st, in windows [1, 11) to [10, 20): [1, 11) would be closed
    # without the grace, and takes it
    pay(B, 5.0, "m-505", "DE", 10 + 50 / 60),
    pay(C, 99.0, "m-606", "NL", 20),  # st 20: windows starting up to 9 close
    pay(B, 30.0, "m-101", "NL", 5),  # 8: late for all its windows [-4, 6) to [5, 15)
    pay("card-9999", 1.0, "m-1", "NL", 60),  # st 60: closes the rest; its own stay open
]


def windows(
    first: int, last: int, payments: int, amount: float, merchants: int, countries: int
) -> list[dict[str, Any]]:
    """The outputs of the windows starting `first` to `last` minutes after T0, alike."""
    values = {
        "payments": payments,
        "amount": amount,
        "merchants": merchants,
        "countries": countries,
    }
    return [{**values, **window(s, s + 10)} for s in range(first, last + 1)]


ALERTS = {A: windows(-8, 0, 3, 77.5, 3, 3)}  # all three payments, three countries
NORMAL = {
    A: windows(-9, -9, 1, 25.0, 1, 1) + windows(1, 1, 2, 52.5, 2, 2),
    B: windows(-6, -4, 1, 10.0, 1, 1)  # the payment at 3
    + windows(-3, 0, 2, 30.0, 2, 1)  # and 6.5
    + windows(1, 1, 3, 35.0, 3, 2)  # and 10:50 (within grace)
    + windows(2, 3, 4, 42.5, 3, 2)  # and 11:20
    + windows(4, 6, 3, 32.5, 3, 2)  # not 3
    + windows(7, 10, 2, 12.5, 2, 2)  # not 6.5
    + windows(11, 11, 1, 7.5, 1, 1),  # not 10:50
    C: windows(11, 20, 1, 99.0, 1, 1),
}


def values(found: dict[str, list[tuple[dict[str, Any], int]]]) -> dict[str, list[dict[str, Any]]]:
    return {key: [value for value, _ in outputs] for key, outputs in found.items()}


def test_suspicious_windows_go_to_alerts_and_the_rest_to_the_sink(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    example = local_example("payment-fraud-velocity", tmp_path, services, sync_db.name, make_topic)
    alerts, sink = example.topics["payment-alerts"], example.topics["card-velocity"]
    letters = example.dead_letters
    expected = {alerts: 9, sink: 30, letters: 1}
    found = run_example(
        example, services, sync_db, "card_id", PAYMENTS, expected, tmp_path / "w.log"
    )

    got_alerts = by_key(found[alerts])
    assert values(got_alerts) == ALERTS
    # A window's output carries its latest event time: A's last payment, at 1:50.
    assert {ts for _, ts in got_alerts[A]} == {at(1 + 50 / 60)}
    assert values(by_key(found[sink])) == NORMAL
    [(offset, reason, message)] = dead_letters(found[letters])
    assert (offset, reason) == (8, "late")
    assert "past every window's grace" in message, message
