"""Writing feature rows: one document per (group, version, entity), never regressed.

A row replaces the stored one only if it is newer by `(event time, partition, offset)`, so
a replay, a restore or a late duplicate (all older) leaves what readers see alone. The
commit protocol writes each commit's rows right after the Kafka transaction commits and
before the state flush of the same cut (`processor/protocol/features.py` says why).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from tidemark.config.features import FeatureGroup
from tidemark.features.validation import Row
from tidemark.state.errors import StateError
from tidemark.state.retry import DUPLICATE_KEY, with_retry
from tidemark.state.store import delete_matching

STATEMENTS = 200  # per update command, as for state
Order = tuple[int, int, int]  # (event time, partition, offset): `Row.order`
NOTHING: Order = (-1, -1, -1)  # no stored row: older than any
HISTORY_SWEEP_SECONDS = 60.0


def row_id(version: int, entity: str) -> str:
    """`version:entity`: versions are integers, so the split is unambiguous."""
    return f"{version}:{entity}"


def current_collection(group: str) -> str:
    """The latest value of each entity, every version of the group side by side."""
    return f"features.{group}"


def history_collection(group: str) -> str:
    """Every stored row, for `as_of` reads, where the group keeps `history`."""
    return f"features.{group}.history"


@dataclass
class FeatureBuffer:
    """One partition's rows since the last commit, per entity in increasing order: only the
    newest, or with `keep_all` (a group that keeps history) each one newer than the last."""

    keep_all: bool = False
    chains: dict[str, list[Row]] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        chain = self.chains.get(row.entity)
        if chain is None:
            self.chains[row.entity] = [row]
        elif row.order > chain[-1].order:  # an older row (a late record) is never served
            if self.keep_all:
                chain.append(row)
            else:
                chain[-1] = row

    def take(self) -> list[list[Row]]:
        chains, self.chains = list(self.chains.values()), {}
        return chains


@dataclass(frozen=True)
class Written:
    """What one write did: rows stored, rows older than what was stored, and for each
    stored row the milliseconds from its event time to readable."""

    stored: int
    stale: int
    lags_ms: list[int]


class FeatureWriter:
    """Writes one feature group's rows with the event-time guard, and their history.

    It remembers the order of what it stored (or read) per entity, up to `known` entities,
    so a commit's write is its upserts alone: reading the stored orders first cost the
    local MongoDB-protocol server as much again. The memory can only lag MongoDB (orders
    there only grow), so a row it calls older is older; a row it calls newer is still
    guarded by the upsert's filter, and a collision sends the write round again with the
    orders read afresh.
    """

    def __init__(self, db: AsyncDatabase[Any], group: FeatureGroup, known: int = 200_000) -> None:
        self.group = group
        self._current = db[current_collection(group.group)]
        self._history = db[history_collection(group.group)] if group.history else None
        self._last_sweep = 0.0
        self._known: dict[str, Order] = {}  # oldest first: evicted first
        self._known_limit = known

    async def write(self, chains: Iterable[list[Row]]) -> Written:
        """Store each entity's newest row if it is newer than the stored one, and the rows
        of the chain past the stored one in the history."""
        chains = list(chains)
        if not chains:
            return Written(0, 0, [])
        for _ in range(10):
            before = await self._orders([c[-1].entity for c in chains])
            newer = [c for c in chains if c[-1].order > before[c[-1].entity]]
            if await self._store([c[-1] for c in newer]):
                break
            for c in chains:  # someone else wrote meanwhile: read them again
                self._known.pop(c[-1].entity, None)
        else:  # pragma: no cover - ten races in a row on one entity
            raise StateError(f"feature group {self.group.group}: writers keep colliding")
        for c in newer:
            self._known[c[-1].entity] = c[-1].order
        readable = _now_ms()
        if self._history is not None:
            kept = [r for c in newer for r in c if r.order > before[r.entity]]
            await self._keep_history(kept, readable)
        self._trim()
        lags = [readable - c[-1].time for c in newer]
        return Written(len(newer), len(chains) - len(newer), lags)

    async def _orders(self, entities: list[str]) -> dict[str, Order]:
        """The order of each entity's stored row (`NOTHING` if none), read for the entities
        not remembered."""
        unknown = [e for e in entities if e not in self._known]
        if unknown:
            version = self.group.version
            ids = [row_id(version, e) for e in unknown]
            docs = await with_retry(
                lambda: self._current.find(
                    {"_id": {"$in": ids}}, {"e": 1, "t": 1, "p": 1, "off": 1}
                ).to_list(None)
            )
            self._known.update(dict.fromkeys(unknown, NOTHING))
            self._known.update({d["e"]: (d["t"], d["p"], d["off"]) for d in docs})
        return {e: self._known[e] for e in entities}

    def _trim(self) -> None:
        over = len(self._known) - self._known_limit
        if over > 0:
            for entity in list(itertools.islice(self._known, over)):
                del self._known[entity]

    async def _store(self, rows: list[Row]) -> bool:
        """False if an upsert collided with a newer document written meanwhile."""
        version, now = self.group.version, _now_ms()
        statements = [
            {
                "q": {"_id": row_id(version, r.entity), **_older_than(r)},
                "u": {"$set": _document(version, r, now)},
                "upsert": True,
            }
            for r in rows
        ]
        errors = await _send(self._current, statements)
        if any(e.get("code") == DUPLICATE_KEY for e in errors):
            return False
        if errors:
            raise StateError(f"feature write to {self._current.name} failed: {errors[0]}")
        return True

    async def _keep_history(self, rows: list[Row], now: int) -> None:
        """Every stored row under its own id: inserting one twice changes nothing."""
        assert self._history is not None and self.group.history is not None
        history, version = self._history, self.group.version
        statements = [
            {
                "q": {"_id": f"{row_id(version, r.entity)}:{r.time}:{r.partition}:{r.offset}"},
                "u": {"$setOnInsert": _document(version, r, now)},
                "upsert": True,
            }
            for r in rows
        ]
        if errors := await _send(history, statements):
            raise StateError(f"feature history write to {history.name} failed: {errors[0]}")
        if time.monotonic() - self._last_sweep >= HISTORY_SWEEP_SECONDS:
            self._last_sweep = time.monotonic()
            horizon = now - int(self.group.history * 1000)
            await delete_matching(history, {"ver": version, "t": {"$lt": horizon}})


async def _send(coll: AsyncCollection[Any], statements: list[dict[str, Any]]) -> list[Any]:
    """Unordered `update` commands of at most `STATEMENTS`; the write errors of the first
    one that has any (FerretDB 1.x stops a command at its first failing statement)."""
    for start in range(0, len(statements), STATEMENTS):
        batch = statements[start : start + STATEMENTS]
        command = {"update": coll.name, "updates": batch, "ordered": False}
        reply = await with_retry(lambda c=command: coll.database.command(c))  # type: ignore[misc]
        if errors := reply.get("writeErrors"):
            return list(errors)
    return []


def _older_than(row: Row) -> dict[str, Any]:
    """Matches a stored document older than `row` (absent matches nothing: the upsert
    inserts; present and newer: the upsert collides on `_id`)."""
    t, p, off = row.order
    return {
        "$or": [
            {"t": {"$lt": t}},
            {"t": t, "p": {"$lt": p}},
            {"t": t, "p": p, "off": {"$lt": off}},
        ]
    }


def _document(version: int, row: Row, now: int) -> dict[str, Any]:
    return {
        "ver": version,
        "e": row.entity,
        "v": row.values,
        "t": row.time,
        "p": row.partition,
        "off": row.offset,
        "w": now,
    }


def _now_ms() -> int:
    return int(time.time() * 1000)
