"""One partition's operator state: a bounded read-through cache, a dirty set, a fenced flush.

Reads: the pipeline prefetches the keys of a batch with one query; `get` then answers from
memory. Writes: `put`/`delete` only touch memory and mark the key dirty with the offset that
changed it; at a checkpoint `flush` writes each dirty key once (coalesced) with unordered
`update` commands whose statements are conditional on the owner's epoch. An operator with a
`Table` keeps its values itself: the store reads for it what the table lacks, without
caching it, and takes the table's changes at each flush.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Collection, Iterable, Mapping
from itertools import chain
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from tidemark.config import faults
from tidemark.config.state import TIMER_PREFIX, NotPrefetched, Stamped, Table
from tidemark.state.chunks import Record
from tidemark.state.clocks import CLOCK_KEY, StreamClock
from tidemark.state.errors import Fenced, StateError
from tidemark.state.names import state_id, state_prefix
from tidemark.state.retry import DUPLICATE_KEY, with_retry

_ABSENT = Stamped(None, -1)  # cached "no document": a key never written
_stamp = tuple.__new__


class PartitionStore:
    """State of every operator of one topology in one source partition."""

    def __init__(
        self,
        collection: AsyncCollection[Any],
        partition: int,
        cache_entries: int = 100_000,
        flush_statements: int = 200,
        floor: int = 0,
        base: int | None = None,
    ) -> None:
        self._coll = collection
        self.partition = partition
        self._floor = floor  # documents of an older epoch are void (`Checkpoint.floor`)
        self._limit = cache_entries
        self._chunk = flush_statements
        # OrderedDict as LRU: move_to_end and popitem are C, cheaper per event than a library.
        self._cache: OrderedDict[str, Stamped] = OrderedDict()
        self._dirty: dict[str, tuple[str, str, Stamped]] = {}
        # Keys of a flush in progress: still authoritative in memory until it completes,
        # because processing goes on while the flush runs.
        self._flushing: dict[str, tuple[str, str, Stamped]] = {}
        self._tombstones: list[tuple[str, int]] = []  # (id, offset) of deletes not yet swept
        # Since the last `take_cache_stats`: keys found in memory, read, evicted (metrics).
        self._hits = self._misses = self._evictions = 0
        # Stream time per operator that keeps one (`clocks.py`), resolved at `base` = W.
        self._base = base
        self._clocks: dict[tuple[str, str], StreamClock] = {}  # (op, name)
        self._tables: dict[str, Table] = {}  # op: the values it keeps itself

    def table(self, op: str) -> Table:
        """The `Table` of `op` in this partition."""
        if (table := self._tables.get(op)) is None:
            table = self._tables[op] = Table()
        return table

    def view(self, op: str) -> OperatorState:
        """The `State` of operator `op` in this partition."""
        return OperatorState(self, op)

    @property
    def dirty_count(self) -> int:
        return len(self._dirty) + sum(len(t.dirty) for t in self._tables.values())

    @property
    def cached_count(self) -> int:
        return len(self._cache) + sum(len(t.entries) for t in self._tables.values())

    async def prefetch(self, op: str, keys: Collection[str]) -> None:
        """Load the keys not in memory with one query."""
        self._trim()
        sids = {state_id(op, self.partition, k) for k in keys}
        missing = {
            sid
            for sid in sids
            if sid not in self._cache and sid not in self._dirty and sid not in self._flushing
        }
        await self._fetch(missing, len(sids), self._cache)

    async def read(self, op: str, keys: Collection[str]) -> dict[str, Stamped]:
        """The stamped values of those of `keys` that were written (one query for the ones
        not in memory), each looked up once: this runs per key of every batch."""
        self._trim()
        prefix = state_prefix(op, self.partition)
        # What an operator with a table reads, the table holds: a copy cached here would
        # be stale once the table changes it.
        cache: dict[str, Stamped] = self._cache if op not in self._tables else {}
        out: dict[str, Stamped] = {}
        missing: dict[str, str] = {}  # sid: key
        for key in keys:
            sid = prefix + key
            found = cache.get(sid)
            if found is None:
                found = self._in_flight(sid)
                if found is None:
                    missing[sid] = key
                    continue
                cache[sid] = found
            if found is not _ABSENT:
                out[key] = found
        for sid, stamped in (await self._fetch(missing.keys(), len(keys), cache)).items():
            out[missing[sid]] = stamped
        return out

    async def _fetch(
        self, missing: Collection[str], asked: int, cache: dict[str, Stamped]
    ) -> dict[str, Stamped]:
        """Read `missing` (of `asked` keys) into `cache`; those MongoDB holds."""
        self._hits += asked - len(missing)
        if not missing:
            return {}
        ids = list(missing)
        self._misses += len(ids)
        docs = await with_retry(
            lambda: self._coll.find({"_id": {"$in": ids}}, {"v": 1, "off": 1, "ep": 1}).to_list(
                None
            )
        )
        found: dict[str, Stamped] = {}
        for doc in docs:
            if doc.get("ep", 0) < self._floor:
                continue  # a zombie wrote it after a restore: absent; our flush overwrites it
            found[doc["_id"]] = Stamped(doc.get("v"), doc.get("off", -1))
        for sid in ids:
            cache[sid] = found.get(sid, _ABSENT)
        return found

    def write(self, op: str, values: Mapping[str, tuple[Any, int]]) -> None:
        """Set each key to its (value, offset): `put` for a whole batch."""
        prefix, cache, dirty = state_prefix(op, self.partition), self._cache, self._dirty
        for key, pair in values.items():
            sid = prefix + key
            # A `Stamped` without its Python-level `__new__`: the same tuple, for less.
            cache[sid] = stamped = _stamp(Stamped, pair)
            cache.move_to_end(sid)
            dirty[sid] = (op, key, stamped)

    def get(self, op: str, key: str) -> Stamped | None:
        sid = state_id(op, self.partition, key)
        found = self._cache.get(sid)
        if found is None:
            found = self._in_flight(sid)
            if found is None:
                raise NotPrefetched(f"{sid} was read before it was prefetched")
            self._cache[sid] = found
        else:
            self._cache.move_to_end(sid)
        return None if found is _ABSENT else found

    def _in_flight(self, sid: str) -> Stamped | None:
        """A key evicted from the cache while dirty or being flushed: memory still has it."""
        pending = self._dirty.get(sid) or self._flushing.get(sid)
        return None if pending is None else pending[2]

    def put(self, op: str, key: str, value: Any, offset: int) -> None:
        sid = state_id(op, self.partition, key)
        stamped = Stamped(value, offset)
        self._cache[sid] = stamped
        self._dirty[sid] = (op, key, stamped)

    def forget(self) -> None:
        """Drop everything in memory (the partition was revoked or fenced)."""
        self._cache.clear()
        self._dirty.clear()
        self._flushing.clear()
        self._tombstones.clear()
        for table in self._tables.values():
            table.forget()

    async def scan(self, op: str, low: str, high: str) -> list[tuple[str, Stamped]]:
        """Live keys of `op` in `[low, high)` in key order, from MongoDB and memory; they
        are cached, so `get` answers for them."""
        lo, hi = state_id(op, self.partition, low), state_id(op, self.partition, high)
        docs = await with_retry(
            lambda: self._coll.find(
                {"_id": {"$gte": lo, "$lt": hi}, "ep": {"$gte": self._floor}, "del": False},
                {"v": 1, "off": 1},
            ).to_list(None)
        )
        found: dict[str, Stamped] = {}
        for doc in docs:
            sid = doc["_id"]
            found[sid] = self._cache.get(sid) or Stamped(doc.get("v"), doc.get("off", -1))
        for pending in (self._flushing, self._dirty):  # newer than MongoDB, newest last
            for sid, (_, _, stamped) in pending.items():
                if lo <= sid < hi:
                    found[sid] = stamped
        prefix = len(lo) - len(low)
        out = []
        for sid in sorted(found):
            stamped = found[sid]
            self._cache[sid] = stamped
            if stamped.value is not None:
                out.append((sid[prefix:], stamped))
        return out

    async def load_clock(self, op: str, name: str = "") -> int:
        """The stream time of `op` at `base` (read once, then kept in memory)."""
        clock = self._clocks.get((op, name))
        if clock is None:
            sid = state_id(op, self.partition, _clock_key(name))
            doc = await with_retry(lambda: self._coll.find_one({"_id": sid}, {"v": 1, "ep": 1}))
            stored = doc.get("v") if doc is not None and doc.get("ep", 0) >= self._floor else None
            clock = self._clocks[op, name] = StreamClock.resolve(stored, self._base, sid)
        return clock.millis

    def set_clock(self, op: str, millis: int, name: str = "") -> None:
        self._clocks[op, name].millis = millis

    def flush(self, epoch: int, cut: int | None = None) -> Awaitable[Iterable[Record]]:
        """Take the dirty keys now; the awaitable writes them conditional on `epoch`.

        The keys are taken at the call, so processing may go on while the write runs; puts
        made meanwhile wait for the next flush, and reads of keys in flight are answered
        from memory. `Fenced` if a newer owner wrote first: MongoDB applies the other
        statements of an unordered command, FerretDB 1.x stops at the first failure; either
        way the per-key `off` stamps make what did apply harmless, and this writer stops.
        The awaitable returns what it wrote, for the changelog, as a lazy iterable: only
        incremental mode reads it.
        """
        assert not self._flushing, "one flush at a time"
        older = {"$lte": epoch}  # one filter object shared by every statement
        # Timers being set go first and timers being deleted last, each group complete
        # before the next: a crash in the middle of a flush may leave a timer without what
        # it acts on (its operator drops it when it fires), never a window, session or
        # expiring value without its timer (which would then live forever).
        groups: tuple[list[Any], ...] = ([], [], [])  # timers being set, the rest, timers deleted
        # A table's changes go straight into statements, without a copy in `_flushing`:
        # the table answers reads of them until a later flush, after this one completed.
        taken: list[tuple[str, list[tuple[str, Any, int]]]] = []
        for op, table in self._tables.items():
            self._evictions += table.evict(self._limit)
            prefix, changed = state_prefix(op, self.partition), table.take_dirty()
            groups[1].extend(
                _statement(prefix + key, op, key, self.partition, value, offset, epoch, older)
                for key, value, offset in changed
            )
            taken.append((op, changed))
        if cut is not None:  # the clocks as of the cut, in the same write as the state
            for (op, name), clock in self._clocks.items():
                if (stored := clock.to_store(cut)) is not None:
                    key = _clock_key(name)
                    self._dirty[state_id(op, self.partition, key)] = (
                        op,
                        key,
                        Stamped(stored, cut - 1),
                    )
        self._flushing, self._dirty = self._dirty, {}
        for sid, (op, key, (value, offset)) in self._flushing.items():
            timer = key.startswith(TIMER_PREFIX)
            groups[1 if not timer else 0 if value is not None else 2].append(
                _statement(sid, op, key, self.partition, value, offset, epoch, older)
            )
        statements = [*groups[0], *groups[1], *groups[2]]
        return self._write(statements, epoch, [len(group) for group in groups], taken)

    async def _write(
        self,
        statements: list[dict[str, Any]],
        epoch: int,
        sizes: list[int],
        taken: list[tuple[str, list[tuple[str, Any, int]]]],
    ) -> Iterable[Record]:
        """Write the statements group by group (`sizes`), each group complete before the
        next, in commands of at most `flush_statements`; what was written, as `Record`s."""
        what = f"state flush of partition {self.partition}"
        begin = 0
        for size in sizes:
            group, begin = statements[begin : begin + size], begin + size
            for start in range(0, len(group), self._chunk):
                faults.point("flush_state")
                await send_updates(self._coll, group[start : start + self._chunk], epoch, what)
        flushed, self._flushing = self._flushing, {}
        self._tombstones += [(sid, off) for sid, (_, _, (v, off)) in flushed.items() if v is None]
        return chain(
            ((op, key, v, off) for op, key, (v, off) in flushed.values()),
            ((op, key, v, off) for op, changed in taken for key, v, off in changed),
        )

    async def changed_since(self, offset: int) -> list[Record]:
        """Every key whose last change is at or after `offset`, as stored."""
        docs = await with_retry(
            lambda: self._coll.find(
                {"p": self.partition, "off": {"$gte": offset}, "ep": {"$gte": self._floor}},
                {"_id": 0, "op": 1, "k": 1, "v": 1, "off": 1},
            ).to_list(None)
        )
        return [(d["op"], d["k"], d["v"], d["off"]) for d in docs]

    @property
    def tombstones(self) -> int:
        """Deletes flushed and not yet swept."""
        return len(self._tombstones)

    async def sweep_tombstones(self, epoch: int, below: int) -> int:
        """Remove the deletes this store flushed that the checkpoint has passed (recovery
        never replays below it), by id: a query on other fields is a scan of the whole
        collection on FerretDB, and a sweep after windows closed made one per thousand
        deletes (docs/ARCHITECTURE.md, "Large deletes"). A delete written again since
        (`del` false, or a later offset) is kept."""
        due = [sid for sid, off in self._tombstones if off < below]
        self._tombstones = [(sid, off) for sid, off in self._tombstones if off >= below]
        passed = {"del": True, "off": {"$lt": below}, "ep": {"$lte": epoch}}
        deleted = 0
        for start in range(0, len(due), DELETE_BATCH):
            flt = {"_id": {"$in": due[start : start + DELETE_BATCH]}, **passed}
            result = await with_retry(lambda f=flt: self._coll.delete_many(f))  # type: ignore[misc]
            deleted += result.deleted_count
        return deleted

    def take_cache_stats(self) -> tuple[int, int, int]:
        """Hits, misses and evictions since the last call (for metrics)."""
        for table in self._tables.values():
            self._hits, table.hits = self._hits + table.hits, 0
        stats = (self._hits, self._misses, self._evictions)
        self._hits = self._misses = self._evictions = 0
        return stats

    def _trim(self) -> None:
        over = len(self._cache) - self._limit
        for _ in range(over):
            self._cache.popitem(last=False)
        self._evictions += max(0, over)


# Ids per delete. FerretDB 1.x on SQLite fails a delete matching more documents than SQLite
# binds variables (32,766), and larger `$in` lists cost it more per id: deleting 100,000
# documents took 14 s in batches of 1,000, 17 s of 2,000, 24 s of 10,000, 52 s of 30,000.
DELETE_BATCH = 1_000


async def delete_matching(coll: AsyncCollection[Any], flt: dict[str, Any]) -> int:
    """`delete_many(flt)` in batches of ids (`DELETE_BATCH`): a sweep after a checkpoint
    that closed many windows, or a restore's clear, can match millions."""
    deleted = 0
    while docs := await with_retry(
        lambda: coll.find(flt, {"_id": 1}).limit(DELETE_BATCH).to_list(None)
    ):
        batch = {"_id": {"$in": [d["_id"] for d in docs]}}
        result = await with_retry(lambda b=batch: coll.delete_many(b))  # type: ignore[misc]
        deleted += result.deleted_count
        if len(docs) < DELETE_BATCH:
            break
    return deleted


async def send_updates(
    coll: AsyncCollection[Any], statements: list[dict[str, Any]], epoch: int, what: str
) -> None:
    """One unordered `update` command of epoch-conditional upserts; `Fenced` if a newer
    epoch holds one of the documents (the upsert then collides with it on `_id`)."""
    # A raw command rather than bulk_write: pymongo's bulk result merge expects
    # `nModified`, which FerretDB 1.x omits from replies that carry write errors.
    database = coll.database
    command = {"update": coll.name, "updates": statements, "ordered": False}
    reply = await with_retry(lambda: database.command(command))
    errors = reply.get("writeErrors") or []
    if any(e.get("code") == DUPLICATE_KEY for e in errors):
        raise Fenced(what, epoch)
    if errors or reply.get("writeConcernError"):
        first = errors[0] if errors else reply["writeConcernError"]
        raise StateError(f"{what} failed: {first}")


def _statement(
    sid: str, op: str, key: str, partition: int, value: Any, offset: int, epoch: int, older: Any
) -> dict[str, Any]:
    """The epoch-conditional upsert of one key."""
    return {
        "q": {"_id": sid, "ep": older},
        # A whole document rather than update operators: less work for FerretDB
        # (BENCHMARKS.md, "State flushes").
        "u": {
            "op": op,
            "k": key,
            "p": partition,
            "v": value,
            "off": offset,
            "ep": epoch,
            "del": value is None,
        },
        "upsert": True,
    }


def _clock_key(name: str) -> str:
    return f"{CLOCK_KEY}:{name}" if name else CLOCK_KEY


class OperatorState:
    """`State` protocol for one operator, over its partition's store."""

    def __init__(self, store: PartitionStore, op: str) -> None:
        self._store = store
        self._op = op

    async def prefetch(self, keys: Collection[str]) -> None:
        await self._store.prefetch(self._op, keys)

    def get(self, key: str) -> Stamped | None:
        return self._store.get(self._op, key)

    def put(self, key: str, value: Any, offset: int) -> None:
        self._store.put(self._op, key, value, offset)

    async def read(self, keys: Collection[str]) -> dict[str, Stamped]:
        return await self._store.read(self._op, keys)

    def write(self, values: Mapping[str, tuple[Any, int]]) -> None:
        self._store.write(self._op, values)

    def table(self) -> Table:
        return self._store.table(self._op)

    def delete(self, key: str, offset: int) -> None:
        self._store.put(self._op, key, None, offset)

    async def scan(self, low: str, high: str) -> list[tuple[str, Stamped]]:
        return await self._store.scan(self._op, low, high)

    async def load_stream_time(self, name: str = "") -> int:
        return await self._store.load_clock(self._op, name)

    def set_stream_time(self, millis: int, name: str = "") -> None:
        self._store.set_clock(self._op, millis, name)
