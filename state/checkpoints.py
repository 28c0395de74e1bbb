"""Checkpoint documents: the next offset to read per partition, guarded by an owner epoch.

Taking a partition increments its epoch atomically; every later write of the owner is
conditional on that epoch, so a zombie (an old owner after a GC pause or a network split)
is refused and learns it must stop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tidemark.state.errors import Fenced, StateError
from tidemark.state.names import CHECKPOINTS, checkpoint_id
from tidemark.state.retry import with_retry

Status = Literal["running", "failed", "replaying", "paused"]
# Held by an operator's hand-off (replay, restore): group members leave it alone.
HELD = ("replaying", "paused")


@dataclass(frozen=True)
class Checkpoint:
    """One partition's progress as its owner sees it."""

    id: str
    topic: str
    partition: int
    offset: int | None  # next offset to read; None: nothing checkpointed yet
    epoch: int
    status: Status
    error: str | None
    handoff: str | None = None  # id of the hand-off holding the partition
    acked: bool = False  # its owner paused at a committed point
    snapshot_request: str | None = None
    changelog: int | None = None  # incremental mode: checkpoint the changelog reaches
    owner: str | None = None
    seen_at: dt.datetime | None = None  # the owner's last sign of life
    # State documents stamped with an older epoch than this are void: a restore or a clear
    # at this epoch deleted what was there, and only a zombie can have written them since.
    floor: int = 0
    # No state document has `off` at or past `offset`: the last owner finished its state
    # checkpoint before it let go, or an operation restored a cut. Recovery then needs no
    # cautious [W, C) phase without state checkpoints.
    clean: bool = False

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Checkpoint:
        handoff = doc.get("handoff") or {}
        return cls(
            id=doc["_id"],
            topic=doc["topic"],
            partition=doc["partition"],
            offset=doc.get("offset"),
            epoch=doc.get("epoch", 0),
            status=doc.get("status", "running"),
            error=doc.get("error"),
            handoff=handoff.get("id"),
            acked=handoff.get("acked", False),
            snapshot_request=_pending_request(doc),
            changelog=doc.get("changelog"),
            owner=doc.get("owner"),
            seen_at=_aware(doc.get("seen_at")),
            floor=doc.get("floor", 0),
            clean=doc.get("clean", False),
        )

    def live_owner(self, within: float) -> str | None:
        """The owner, if it showed a sign of life in the last `within` seconds."""
        if self.seen_at is None or (_now() - self.seen_at).total_seconds() > within:
            return None
        return self.owner

    @property
    def held(self) -> bool:
        return self.status in HELD


def _aware(when: dt.datetime | None) -> dt.datetime | None:
    return when.replace(tzinfo=dt.UTC) if when is not None and when.tzinfo is None else when


def _matches(doc: dict[str, Any], handoff: str | None) -> bool:
    """Whether `acquire` may take this document (the filter of its update, in Python)."""
    if handoff:
        return (doc.get("handoff") or {}).get("id") == handoff
    return doc.get("status", "running") not in HELD


def _pending_request(doc: dict[str, Any]) -> str | None:
    request = doc.get("snapshot_request")
    return request if request and request != doc.get("snapshot_answered") else None


class HandoffBusy(StateError):
    """Another operation holds the partition."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Checkpoints:
    """The `checkpoints` collection, for one topology."""

    def __init__(self, db: AsyncDatabase[Any], topology: str) -> None:
        self._coll = db[CHECKPOINTS]
        self._topology = topology

    async def acquire(
        self, topic: str, partition: int, owner: str, handoff: str | None = None
    ) -> Checkpoint | None:
        """Take ownership: bump the epoch; the checkpoint as the new owner sees it.

        None if a hand-off holds the partition and `handoff` is not its id: the caller must
        leave it alone. The epoch is bumped in the same atomic update that checks this, so
        a returned checkpoint always carries an epoch nobody else holds.
        """
        cid = checkpoint_id(self._topology, topic, partition)
        allowed: dict[str, Any] = (
            {"handoff.id": handoff} if handoff else {"status": {"$nin": list(HELD)}}
        )
        while True:
            now = _now()
            update = {
                "$inc": {"epoch": 1},
                "$set": {"owner": owner, "updated_at": now, "seen_at": now, "clean": False},
            }
            # BEFORE, to learn whether the last owner left the state clean.
            before = await with_retry(
                lambda u=update: self._coll.find_one_and_update(  # type: ignore[misc]
                    {"_id": cid, **allowed}, u, return_document=ReturnDocument.BEFORE
                )
            )
            if before is not None:
                cp = Checkpoint.from_doc(before)
                return replace(cp, epoch=cp.epoch + 1, owner=owner, seen_at=now)
            doc = await with_retry(lambda: self._coll.find_one({"_id": cid}))
            if doc is None:
                await self._create(cid, topic, partition)
            elif not _matches(doc, handoff):
                return None
            # Otherwise the hand-off ended between the two reads: try again.

    async def _create(self, cid: str, topic: str, partition: int) -> None:
        first = {
            "_id": cid,
            "topology": self._topology,
            "topic": topic,
            "partition": partition,
            "offset": None,
            "epoch": 0,
            "status": "running",
        }
        with contextlib.suppress(DuplicateKeyError):  # created meanwhile, or our own retry
            await with_retry(lambda: self._coll.insert_one(first))

    async def get(self, topic: str, partition: int) -> Checkpoint | None:
        """The checkpoint as stored, or None."""
        doc = await self.raw(topic, partition)
        return Checkpoint.from_doc(doc) if doc else None

    async def raw(self, topic: str, partition: int) -> dict[str, Any] | None:
        """The stored document, every field (for the operations CLI)."""
        cid = checkpoint_id(self._topology, topic, partition)
        return await with_retry(lambda: self._coll.find_one({"_id": cid}))

    async def advance(self, cp: Checkpoint, offset: int, dead_letters: int = 0) -> None:
        """Move to `offset` (next to read) and count dead letters; `Fenced` if fenced.

        Conditional writes return nothing: the caller updates its own copy after the await,
        so a copy changed meanwhile (a snapshot request) is never replaced by a stale one.
        """
        await self._conditional(cp, {"offset": offset}, dead_letters)

    async def mark_failed(
        self, cp: Checkpoint, offset: int, error: str, dead_letters: int = 0
    ) -> None:
        """Record that the partition stopped on repeated failures, with the last error."""
        await self._conditional(
            cp, {"offset": offset, "status": "failed", "error": error}, dead_letters
        )

    async def mark_clean(self, cp: Checkpoint) -> None:
        """Every state write of this epoch is below the checkpoint: the next owner may cut
        state checkpoints from its first record (see `Checkpoint.clean`)."""
        await self._conditional(cp, {"clean": True})

    async def raise_floor(self, cp: Checkpoint) -> None:
        """Void every state document of an older epoch, before the state is cleared or
        restored: a zombie's write that re-creates a deleted key is then ignored."""
        await self._conditional(cp, {"floor": cp.epoch})

    async def current(self, ids: list[str]) -> dict[str, Checkpoint]:
        """The stored checkpoints of these ids, with one query."""
        docs = await with_retry(lambda: self._coll.find({"_id": {"$in": ids}}).to_list(None))
        return {doc["_id"]: Checkpoint.from_doc(doc) for doc in docs}

    async def heartbeat(self, ids: list[str], owner: str) -> None:
        """The group member assigned these partitions is alive (held ones included).

        Only where it is the owner or nobody is: an operator holding a partition, or a
        member that took it while this one is a zombie, keeps its name.
        """
        flt = {"_id": {"$in": ids}, "$or": [{"owner": owner}, {"owner": None}]}
        await with_retry(
            lambda: self._coll.update_many(flt, {"$set": {"owner": owner, "seen_at": _now()}})
        )

    async def release(self, ids: list[str], owner: str) -> None:
        """The member gives these partitions up: it is no longer an owner to wait for."""
        await with_retry(
            lambda: self._coll.update_many(
                {"_id": {"$in": ids}, "owner": owner}, {"$unset": {"seen_at": ""}}
            )
        )

    async def all(self) -> list[dict[str, Any]]:
        """Every checkpoint document of the topology, as stored."""
        return await with_retry(
            lambda: self._coll.find({"topology": self._topology}).sort("partition").to_list(None)
        )

    # -- hand-off: an operator takes a partition from the group and gives it back ----------

    async def begin_handoff(
        self, topic: str, partition: int, status: Status, by: str, force: bool = False
    ) -> Checkpoint:
        """Mark the partition held (`replaying` or `paused`) so its owner pauses and acks.

        `HandoffBusy` if another hand-off holds it, unless `force` (that one died).
        """
        cid = checkpoint_id(self._topology, topic, partition)
        hid = f"{by}:{uuid.uuid4().hex[:8]}"
        flt: dict[str, Any] = {"_id": cid}
        if not force:
            flt["status"] = {"$nin": list(HELD)}
        doc = await with_retry(
            lambda: self._coll.find_one_and_update(
                flt,
                {
                    "$set": {
                        "status": status,
                        "handoff": {"id": hid, "by": by, "at": _now(), "acked": False},
                        "updated_at": _now(),
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is None:
            current = await self.raw(topic, partition)
            if current is None:
                raise StateError(f"partition {partition} has never been processed: no checkpoint")
            holder = (current.get("handoff") or {}).get("by", "?")
            raise HandoffBusy(
                f"partition {partition} is {current.get('status')} by {holder}; "
                "if that operation died, run again with --force"
            )
        return Checkpoint.from_doc(doc)

    async def ack_handoff(self, cid: str, handoff: str) -> None:
        """The group member assigned the partition paused it at a committed point."""
        await with_retry(
            lambda: self._coll.update_one(
                {"_id": cid, "handoff.id": handoff}, {"$set": {"handoff.acked": True}}
            )
        )

    async def end_handoff(
        self, cp: Checkpoint, status: Status, error: str | None = None, clean: bool = False
    ) -> None:
        """Give the partition back to the group; `Fenced` if someone else took it meanwhile.

        `running` clears the error; otherwise `error`, if given, replaces it. `clean`: the
        operation left a consistent cut at the checkpoint (see `Checkpoint.clean`).
        """
        fields: dict[str, Any] = {"status": status, "updated_at": _now(), "clean": clean}
        if error is not None:
            fields["error"] = error
        # The operation is not an owner to wait for: the member's heartbeat names the real
        # one again within a poll.
        gone = dict.fromkeys(["handoff", "owner", "seen_at"], "")
        if status == "running":
            gone["error"] = ""
        result = await with_retry(
            lambda: self._coll.update_one(
                {"_id": cp.id, "epoch": cp.epoch, "handoff.id": cp.handoff},
                {"$set": fields, "$unset": gone},
            )
        )
        if result.matched_count == 0:
            raise Fenced(f"checkpoint {cp.id}", cp.epoch)

    async def cancel_handoff(self, cp: Checkpoint, status: Status) -> None:
        """Undo a hand-off that never fenced the owner (its epoch is unchanged)."""
        await with_retry(
            lambda: self._coll.update_one(
                {"_id": cp.id, "handoff.id": cp.handoff},
                {"$set": {"status": status}, "$unset": {"handoff": ""}},
            )
        )

    # -- snapshots and changelog bookkeeping ---------------------------------------------

    async def request_snapshot(self, topic: str, partition: int) -> str:
        """Ask the owner for a snapshot at its next state checkpoint; the request id."""
        rid = uuid.uuid4().hex[:12]
        cid = checkpoint_id(self._topology, topic, partition)
        await with_retry(
            lambda: self._coll.update_one({"_id": cid}, {"$set": {"snapshot_request": rid}})
        )
        return rid

    async def snapshot_taken(self, cp: Checkpoint, version: int) -> None:
        """Record the newest version; `Fenced` if a newer epoch holds the partition (the
        version is then discarded, never listed)."""
        update = {"$max": {"snapshot": version}, "$set": {"updated_at": _now()}}
        result = await with_retry(
            lambda: self._coll.update_one({"_id": cp.id, "epoch": cp.epoch}, update)
        )
        if result.matched_count == 0:
            raise Fenced(f"snapshot of {cp.id}", cp.epoch)

    async def answer_snapshot(self, cp: Checkpoint, request: str) -> None:
        """Tell `snapshot take` its request was served (after the version is listed)."""
        await with_retry(
            lambda: self._coll.update_one({"_id": cp.id}, {"$set": {"snapshot_answered": request}})
        )

    async def changelog_reaches(self, cp: Checkpoint, offset: int) -> None:
        """Record that the changelog holds every change up to checkpoint `offset`."""
        await self._conditional(cp, {"changelog": offset})

    async def _conditional(
        self, cp: Checkpoint, fields: dict[str, Any], dead_letters: int = 0
    ) -> None:
        update: dict[str, Any] = {"$set": {**fields, "updated_at": _now()}}
        if dead_letters:
            update["$inc"] = {"dead_letters": dead_letters}
        result = await with_retry(
            lambda: self._coll.update_one({"_id": cp.id, "epoch": cp.epoch}, update)
        )
        if result.matched_count == 0:
            raise Fenced(f"checkpoint {cp.id}", cp.epoch)
