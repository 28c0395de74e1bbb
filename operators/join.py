"""The `join` step: stream records enriched from a table, a co-partitioned topic of rows.

The table is this step's state in the partition: `r|<key>` holds the row of each key, and
the named clock `table` the offset of the next table record to apply, stored as of each
state checkpoint like a stream time, so recovery resumes the table exactly at W.

Table and stream records are merged by time, as Kafka Streams merges a task's inputs: before
a stream record at event time t is joined, every table record at the head of the table
partition with a timestamp <= t is applied (a tie goes to the table). A stream record thus
sees the table as of its own time, whatever the batch boundaries; when the table partition
has nothing more to read (`TableFeed.head` answers None) the stream goes on without waiting.
Only stream records produce outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from tidemark.config.base import field_path
from tidemark.config.join import Join as JoinSpec
from tidemark.config.state import State
from tidemark.operators.events import Event, OnError, RecordError, key_string, keyed

POSITION = "table"  # the clock holding the table position


@dataclass(frozen=True, slots=True)
class TableRecord:
    """One table record: its key, its row (None: a tombstone, or a value that is not a JSON
    object, which `error` then describes and the join skips)."""

    offset: int
    key: str | None
    row: dict[str, Any] | None
    timestamp: int
    error: str | None = None


class TableFeed(Protocol):
    """One table partition, read in offset order."""

    async def head(self, position: int) -> TableRecord | None:
        """The first record at or after `position`; None when there is none to read now."""


class Join:
    """Adds a table row's fields to each stream record whose `on` field is the row's key."""

    stateful = True
    batched = True
    fans_out = False

    def __init__(self, spec: JoinSpec, keyed_by_on: bool) -> None:
        self.id = spec.state_id
        self.table = spec.table
        self._on = field_path(spec.on)
        self._fields = spec.fields
        self._inner = spec.how == "inner"
        # The stream's Kafka key is the event key: each record can be checked to be keyed by
        # its join key, which co-partitioning with the table needs.
        self._keyed_by_on = keyed_by_on
        self.table_errors = 0  # table records skipped as not a JSON object, since last taken

    async def join(
        self, events: list[Event], state: State, feed: TableFeed, on_error: OnError
    ) -> list[Event]:
        """The batch's records enriched, in offset order (inner: those with a row only)."""
        pairs = keyed(events, self._row_key, on_error)
        await state.prefetch({_row(key) for _, key in pairs})
        start = position = max(await state.load_stream_time(POSITION), 0)
        out = []
        for event, key in pairs:
            while (record := await feed.head(position)) is not None:
                if record.timestamp > event.timestamp:
                    break
                self._apply(record, state, event.offset)
                position = record.offset + 1
            found = state.get(_row(key))
            row = found.value if found is not None else None
            if row is not None or not self._inner:
                out.append(replace(event, value={**event.value, **self._pick(row)}))
        if position != start:
            state.set_stream_time(position, POSITION)
        return out

    def _row_key(self, event: Event) -> str:
        key = key_string(event.value, self._on)
        if self._keyed_by_on and event.key != key:
            raise RecordError(
                f"record key {event.key!r} is not its join key {key!r}: the stream must be keyed "
                f"by {'.'.join(self._on)} to meet the table's rows in its partition",
                "not_copartitioned",
            )
        return key

    def _apply(self, record: TableRecord, state: State, offset: int) -> None:
        if record.key is None or record.error is not None:
            self.table_errors += 1
            return
        key = _row(record.key)  # written without a read: a row is replaced whole
        if record.row is None:
            state.delete(key, offset)
        else:
            state.put(key, record.row, offset)

    def _pick(self, row: dict[str, Any] | None) -> dict[str, Any]:
        if self._fields is None:
            return row or {}
        return {f: row.get(f) if row is not None else None for f in self._fields}


def _row(key: str) -> str:
    return f"r|{key}"
