"""Drift of each feature against a recorded baseline, and how fresh a group is.

A baseline is a sample of the group's current values, recorded on demand
(`tidemark features baseline FILE`). Numeric and bool features are compared with the
two-sample Kolmogorov-Smirnov test (SciPy) and the population stability index over the
baseline's deciles; string features with the PSI over their categories. A PSI above 0.2 is
the usual "investigate" threshold.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections import Counter
from typing import Any

import numpy as np
from pymongo.asynchronous.database import AsyncDatabase
from scipy import stats

from tidemark.features.materialize import current_collection
from tidemark.features.registry import FEATURE_GROUPS, GroupInfo, group_id

SAMPLE = 5_000  # documents read per sample: all of them for groups that small
_EPS = 1e-4  # a bin or category empty on one side would make the PSI infinite


async def sample(db: AsyncDatabase[Any], info: GroupInfo) -> dict[str, list[Any]]:
    """Up to `SAMPLE` non-null values of each feature, from the current documents."""
    docs = await (
        db[current_collection(info.group)]
        .find({"ver": info.version}, {"v": 1})
        .limit(SAMPLE)
        .to_list(None)
    )
    values: dict[str, list[Any]] = {f: [] for f in info.features}
    for doc in docs:
        for name, found in values.items():
            if (value := doc["v"].get(name)) is not None:
                found.append(value)
    return values


async def record_baseline(db: AsyncDatabase[Any], info: GroupInfo) -> dict[str, int]:
    """Store a sample of the current values as the baseline; values per feature."""
    baseline = await sample(db, info)
    await db[FEATURE_GROUPS].update_one(
        {"_id": group_id(info.group, info.version)},
        {"$set": {"baseline": baseline, "baseline_at": dt.datetime.now(dt.UTC)}},
    )
    return {name: len(values) for name, values in baseline.items()}


def drift(info: GroupInfo, current: dict[str, list[Any]]) -> dict[str, dict[str, float]]:
    """Per feature with a baseline and current values: `psi`, and for numbers `ks` with its
    `p_value`."""
    out: dict[str, dict[str, float]] = {}
    for name, base in info.baseline.items():
        now = current.get(name) or []
        if not base or not now or name not in info.features:
            continue
        if info.features[name].type == "str":
            out[name] = {"psi": _psi_categories(base, now)}
            continue
        a, b = np.asarray(base, dtype=float), np.asarray(now, dtype=float)
        result = stats.ks_2samp(a, b)
        out[name] = {
            "ks": float(result.statistic),
            "p_value": float(result.pvalue),
            "psi": _psi_numeric(a, b),
        }
    return out


def _psi(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any]) -> float:
    e = np.clip(expected / expected.sum(), _EPS, None)
    a = np.clip(actual / actual.sum(), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _psi_numeric(base: np.ndarray[Any, Any], now: np.ndarray[Any, Any]) -> float:
    edges = np.unique(np.quantile(base, np.linspace(0, 1, 11)))
    if len(edges) < 2:  # a constant baseline: one bin for it, one for anything else
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    return _psi(np.histogram(base, edges)[0], np.histogram(now, edges)[0])


def _psi_categories(base: list[Any], now: list[Any]) -> float:
    b, n = Counter(map(str, base)), Counter(map(str, now))
    keys = sorted(set(b) | set(n))
    return _psi(np.array([b[k] for k in keys], float), np.array([n[k] for k in keys], float))


async def freshness(db: AsyncDatabase[Any], info: GroupInfo, latest: int = 100) -> dict[str, Any]:
    """How current the group is: entities, the newest event time's age, and the event-time
    to readable lag of the `latest` writes (median and max, seconds)."""
    coll = db[current_collection(info.group)]
    docs = await (
        coll.find({"ver": info.version}, {"t": 1, "w": 1}).sort("w", -1).limit(latest).to_list(None)
    )
    entities = await coll.count_documents({"ver": info.version})
    if not docs:
        return {"entities": entities, "newest_age_s": None, "lag_p50_s": None, "lag_max_s": None}
    lags = [(d["w"] - d["t"]) / 1000 for d in docs]
    newest = max(d["t"] for d in docs)
    return {
        "entities": entities,
        "newest_age_s": round(time.time() - newest / 1000, 3),
        "lag_p50_s": round(statistics.median(lags), 3),
        "lag_max_s": round(max(lags), 3),
    }
