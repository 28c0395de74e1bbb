"""config/examples/clickstream-sessions.yaml on a real worker: crafted page events in, the
exact sessions out (session windows, gap 30m, grace 1m), the late view dead-lettered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.integration.examples.example_runs import (
    at,
    by_key,
    dead_letters,
    iso_at,
    local_example,
    run_example,
    window,
)
from tests.support import Services, TopicFactory

pytestmark = pytest.mark.integration


def view(user: str, page: str, minutes: float, kind: str = "page_view") -> dict[str, Any]:
    # ISO 8601 mostly; whole minutes past the hour in epoch ms, to read both forms.
    ts: str | int = at(minutes) if minutes % 60 == 0 else iso_at(minutes)
    return {"user_id": user, "event_type": kind, "page": page, "ts": ts}


# In the order produced; minutes after T0. Stream time (st) is the largest event time yet.
EVENTS = [
    view("u1", "/", 0),  # 0
    view("u1", "/products", 5),
    view("u2", "/", 6),
    view("u1", "/products", 7, kind="click"),  # not a page view: filtered out
    view("u1", "/products/42", 12),
    view("u2", "/blog", 9),  # 5: a little out of order, in u2's session
    view("u1", "/products", 14),
    view("u1", "/cart", 20),
    view("u3", "/", 40),  # st 40: u2's session [6, 9] closes (9 + 30 + 1 <= 40)
    view("u2", "/pricing", 8),  # 9: late, its session closed: a dead letter
    view("u1", "/checkout", 21),  # 10: out of order, extends u1's session to [0, 21]
    # 11: 30.5 minutes behind st, within gap + grace: a session of its own, [9.5, 9.5]
    view("u3", "/docs", 9.5),
    view("u1", "/", 55),  # st 55: closes u3's [9.5] (40.5) and u1's [0, 21] (52)
    view("u3", "/docs/sessions", 41),  # u3's session [40, 41]
    view("u1", "/account", 70),
    view("u4", "/", 120),  # 15: st 120: closes u3's [40, 41] (72) and u1's [55, 70] (101)
    view("u4", "/faq", 150.5),  # 30.5 after /: a second session; the first closes at 151
    view("u4", "/contact", 135),  # within 30 of both: merges them into [120, 150.5]
    view("zz-end", "/", 240),  # st 240: closes u4's session; its own stays open
]


def session(
    views: int, distinct: int, pages: list[str], last: str, start: float, end: float
) -> tuple[dict[str, Any], int]:
    """A closed session's output and Kafka timestamp (its last event time). `first_page`,
    `last_page` and `pages` follow arrival order, as Kafka Streams' aggregator does."""
    value = {
        "page_views": views,
        "distinct_pages": distinct,
        "first_page": pages[0],
        "last_page": last,
        "pages": pages,
        **window(start, end),
    }
    return value, at(end)


EXPECTED = {
    "u1": [
        session(6, 5, ["/", "/products", "/products/42", "/products", "/cart"], "/checkout", 0, 21),
        session(2, 2, ["/", "/account"], "/account", 55, 70),
    ],
    "u2": [session(2, 2, ["/", "/blog"], "/blog", 6, 9)],
    "u3": [
        session(1, 1, ["/docs"], "/docs", 9.5, 9.5),
        session(2, 2, ["/", "/docs/sessions"], "/docs/sessions", 40, 41),
    ],
    # Merged: the earlier session's views, the later one's, then the view that joined them.
    "u4": [session(3, 3, ["/", "/faq", "/contact"], "/contact", 120, 150.5)],
}


def test_sessions_are_exact(
    services: Services, make_topic: TopicFactory, sync_db: Database[Any], tmp_path: Path
) -> None:
    example = local_example("clickstream-sessions", tmp_path, services, sync_db.name, make_topic)
    sink, letters = example.topics["user-sessions"], example.dead_letters
    found = run_example(
        example, services, sync_db, "user_id", EVENTS, {sink: 6, letters: 1}, tmp_path / "w.log"
    )

    assert by_key(found[sink]) == EXPECTED
    [(offset, reason, message)] = dead_letters(found[letters])
    assert (offset, reason) == (9, "late")
    assert f"session of {iso_at(8)[:-1]}" in message, message
