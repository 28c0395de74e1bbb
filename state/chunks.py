"""Payloads too big for one document: state records in compressed, checksummed chunks.

A payload is a sequence of records `[op, key, value, off]`. It is cut into chunks of about
`chunk_bytes` (compressed) so no document nears MongoDB's 16 MB limit; each chunk carries
the SHA-256 of its bytes and the manifest carries one over all of them, so a restore can
prove the whole payload intact before it changes anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from pymongo.asynchronous.collection import AsyncCollection

from tidemark.state.errors import StateError
from tidemark.state.retry import insert_all, with_retry

Record = tuple[str, str, Any, int]  # op, key, value, offset of the last event applied
CHUNKS = "snapshot_chunks"
ENCODING = "json-lines+zlib"
_INSERT_BATCH = 8  # chunks per insert: a few MB per round trip


class CorruptPayload(StateError):
    """A chunk is missing or its bytes do not match the checksum recorded when written."""


@dataclass
class Written:
    """What a payload writer produced: the manifest's numbers."""

    chunks: int = 0
    keys: int = 0
    bytes: int = 0
    checksum: str = ""
    _digest: Any = field(default_factory=hashlib.sha256, repr=False)


def chunk_id(owner: str, n: int) -> str:
    return f"{owner}:{n}"


def _encode(lines: list[bytes]) -> bytes:
    return zlib.compress(b"\n".join(lines), 1)


async def write_payload(
    coll: AsyncCollection[Any],
    owner: str,
    records: AsyncIterator[Record] | Iterable[Record],
    chunk_bytes: int,
) -> Written:
    """Write `records` as the chunks of `owner` (a manifest id), replacing any leftovers."""
    await with_retry(lambda: coll.delete_many({"owner": owner}))
    out = Written()
    pending: list[dict[str, Any]] = []
    lines: list[bytes] = []
    size = 0
    # Compression is about 5:1 on state records; cut on raw size so a chunk stays near
    # chunk_bytes compressed without compressing twice.
    raw_limit = chunk_bytes * 4

    async def cut() -> None:
        nonlocal lines, size
        # zlib releases the GIL: compressing on a thread keeps the event loop, and with it
        # the partition's processing, running while a big snapshot is written.
        data = await asyncio.to_thread(_encode, lines)
        out._digest.update(data)
        pending.append(
            {
                "_id": chunk_id(owner, out.chunks),
                "owner": owner,
                "n": out.chunks,
                "data": data,
                "sha256": hashlib.sha256(data).hexdigest(),
                "records": len(lines),
            }
        )
        out.chunks += 1
        out.bytes += len(data)
        lines, size = [], 0
        if len(pending) >= _INSERT_BATCH:
            await _insert(coll, pending)

    async for record in _aiter(records):
        line = orjson.dumps(record)
        lines.append(line)
        size += len(line)
        out.keys += 1
        if size >= raw_limit:
            await cut()
    if lines:
        await cut()
    await _insert(coll, pending)
    out.checksum = out._digest.hexdigest()
    return out


async def _insert(coll: AsyncCollection[Any], docs: list[dict[str, Any]]) -> None:
    if docs:
        batch = list(docs)
        docs.clear()
        await insert_all(coll, batch)


async def _aiter(records: AsyncIterator[Record] | Iterable[Record]) -> AsyncIterator[Record]:
    if isinstance(records, AsyncIterator):
        async for r in records:
            yield r
    else:
        for r in records:
            yield r


async def read_chunks(
    coll: AsyncCollection[Any], owner: str, chunks: int, checksum: str
) -> AsyncIterator[bytes]:
    """Each chunk's compressed bytes in order, verified; `CorruptPayload` at the first fault.

    The whole-payload checksum is checked after the last chunk: a consumer that must not act
    on a bad payload reads it through once (`verify`) before using it.
    """
    digest = hashlib.sha256()
    for n in range(chunks):
        doc = await _find(coll, chunk_id(owner, n))
        if doc is None:
            raise CorruptPayload(f"{owner}: chunk {n} of {chunks} is missing")
        data = bytes(doc["data"])
        if hashlib.sha256(data).hexdigest() != doc.get("sha256"):
            raise CorruptPayload(f"{owner}: chunk {n} does not match its checksum")
        digest.update(data)
        yield data
    if digest.hexdigest() != checksum:
        raise CorruptPayload(f"{owner}: payload does not match the manifest's checksum")


async def verify(coll: AsyncCollection[Any], owner: str, chunks: int, checksum: str) -> None:
    """Read every chunk and check every checksum, decoding nothing."""
    async for _ in read_chunks(coll, owner, chunks, checksum):
        pass


async def _find(coll: AsyncCollection[Any], cid: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await with_retry(lambda: coll.find_one({"_id": cid}))
    return found


def decode(data: bytes) -> Iterator[Record]:
    """The records of one chunk."""
    try:
        raw = zlib.decompress(data)
    except zlib.error as exc:
        raise CorruptPayload(f"chunk does not decompress: {exc}") from exc
    for line in raw.split(b"\n"):
        op, key, value, off = orjson.loads(line)
        yield (op, key, value, off)


async def records(
    coll: AsyncCollection[Any], owner: str, chunks: int, checksum: str
) -> AsyncIterator[Record]:
    """Every record of a payload, verified chunk by chunk."""
    async for data in read_chunks(coll, owner, chunks, checksum):
        for record in decode(data):
            yield record


async def delete_payloads(coll: AsyncCollection[Any], owners: list[str]) -> None:
    if owners:
        await with_retry(lambda: coll.delete_many({"owner": {"$in": owners}}))
