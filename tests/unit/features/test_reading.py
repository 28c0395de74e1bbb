"""Resolving requests, the cache and TTL at read time, lineage and drift: no I/O."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tidemark.config import load_topology
from tidemark.features.drift import drift
from tidemark.features.lineage import lineage
from tidemark.features.reading import FeatureRequestError, Reader, UnknownGroup
from tidemark.features.registry import GroupInfo

EXAMPLE = Path(__file__).resolve().parents[3] / "config/examples/user-features.yaml"
HOUR = 3_600_000


def info(**changes: Any) -> GroupInfo:
    base = GroupInfo.of(load_topology(EXAMPLE, env={}))
    return GroupInfo.from_doc({**base.to_doc(), **changes})


def reader(*infos: GroupInfo) -> Reader:
    r = Reader(cache_ttl=60)
    r.set_registry([i.to_doc() for i in infos or (info(),)])
    return r


def doc(entity: str, t: int, **values: Any) -> dict[str, Any]:
    return {"e": entity, "t": t, "v": values}


def test_values_older_than_the_ttl_are_served_as_expired_and_absent_ones_as_missing() -> None:
    r = reader()
    now = int(time.time() * 1000)
    plan = r.plan("user_activity", ["fresh", "old", "never"])
    assert plan.to_read == ["1:fresh", "1:old", "1:never"]
    fresh, old, never = r.answer(
        plan, [doc("fresh", now - HOUR, clicks_1h=3), doc("old", now - 25 * HOUR, clicks_1h=9)]
    )
    assert (fresh.status, fresh.values["clicks_1h"]) == ("ok", 3)
    assert fresh.staleness is not None and 3599 < fresh.staleness < 3700
    assert (old.status, old.values) == ("expired", dict.fromkeys(old.values))
    assert (never.status, never.event_time) == ("missing", None)


def test_the_cache_answers_repeated_lookups_absent_entities_included() -> None:
    r = reader()
    now = int(time.time() * 1000)
    r.answer(r.plan("user_activity", ["a", "b"]), [doc("a", now, clicks_1h=1)])
    plan = r.plan("user_activity", ["a", "b", "c"], features=["clicks_1h"])
    assert plan.to_read == ["1:c"]
    a, b, _ = r.answer(plan, [])
    assert (a.values, b.status) == ({"clicks_1h": 1}, "missing")
    assert (r.stats.hits, r.stats.misses) == (2, 3)
    assert r.stats.hit_rate == pytest.approx(0.4)


def test_the_latest_version_is_served_unless_one_is_asked_for() -> None:
    r = reader(info(), info(version=2))
    assert r.plan("user_activity", "u").info.version == 2
    assert r.plan("user_activity", "u", version=1).to_read == ["1:u"]


@pytest.mark.parametrize(
    ("request_", "error", "says"),
    [
        ({"group": "nope"}, UnknownGroup, "unknown feature group 'nope'"),
        ({"version": 3}, UnknownGroup, "has no version 3"),
        ({"features": ["clicks_1h", "bogus"]}, FeatureRequestError, "unknown features ['bogus']"),
        ({"features": []}, FeatureRequestError, "unknown features"),
        ({"entities": []}, FeatureRequestError, "1 to 1000"),
        ({"entities": [""]}, FeatureRequestError, "1 to 1000"),
        ({"entities": [f"e{i}" for i in range(1001)]}, FeatureRequestError, "1 to 1000"),
    ],
)
def test_bad_requests_are_refused_saying_why(
    request_: dict[str, Any], error: type[Exception], says: str
) -> None:
    args: dict[str, Any] = {"group": "user_activity", "entities": ["u1"], **request_}
    with pytest.raises(error) as caught:
        reader().plan(**args)
    assert says in str(caught.value)


def test_as_of_needs_history_and_bypasses_the_cache() -> None:
    with pytest.raises(FeatureRequestError, match="keeps no history"):
        reader(info(history=None)).plan("user_activity", "u", as_of=5)
    plan = reader().plan("user_activity", ["u"], as_of=5 * HOUR)
    r = reader()
    [v] = r.answer(plan, [doc("u", 4 * HOUR, clicks_1h=2)])
    assert (v.status, v.staleness, r.stats.misses) == ("ok", 3600.0, 0)


def test_lineage_names_the_steps_that_produce_each_feature() -> None:
    found = lineage(load_topology(EXAMPLE, env={}))
    assert found == {
        "clicks_1h": ["pipeline[0] aggregate activity_1h: count"],
        "spend_1h": ["pipeline[0] aggregate activity_1h: sum(amount)"],
        "last_country": ["pipeline[0] aggregate activity_1h: last(country)"],
    }


def test_drift_is_near_zero_for_the_same_distribution_and_large_for_a_shifted_one() -> None:
    base = [float(i % 50) for i in range(2000)]
    group = info(baseline={"spend_1h": base, "last_country": ["NL"] * 900 + ["DE"] * 100})
    same = drift(group, {"spend_1h": base[::-1], "last_country": ["NL"] * 90 + ["DE"] * 10})
    shifted = drift(group, {"spend_1h": [v + 25 for v in base], "last_country": ["DE"] * 100})
    assert same["spend_1h"]["ks"] < 0.01 and same["spend_1h"]["psi"] < 0.01
    assert same["last_country"]["psi"] < 0.01
    assert shifted["spend_1h"]["ks"] > 0.4 and shifted["spend_1h"]["psi"] > 1
    assert shifted["spend_1h"]["p_value"] < 1e-6
    assert shifted["last_country"]["psi"] > 1
    assert "clicks_1h" not in same  # no baseline recorded for it
