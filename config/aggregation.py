"""The `aggregate` step: a group key, aggregations, and optionally an event-time window.

Windows follow Kafka Streams (docs/ARCHITECTURE.md, "Windows"): sizes, steps, gaps and
grace are durations, kept in milliseconds because event times are epoch milliseconds.
"""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from pydantic import BeforeValidator, Field, model_validator

from tidemark.config.base import NAME, Strict
from tidemark.config.durations import parse_duration

AGGREGATIONS = (
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "first",
    "last",
    "distinct_count",
    "collect",
    "python",
)
# distinct_count is exact up to this many values, then a HyperLogLog estimate.
DISTINCT_EXACT = 1000
COLLECT_MAX = 100  # items a `collect` keeps unless told otherwise
_LIMITED = ("distinct_count", "collect")


class AggregationSpec(NamedTuple):
    """One aggregation: the function, the field path it reads (for `python`, the reducer's
    `module:name`), and the bound of `distinct_count` / `collect`."""

    function: str
    field: str | None
    limit: int | None = None


def _aggregation(spec: object) -> AggregationSpec:
    """`count`, `{sum: field}`, `{collect: {field: f, limit: 10}}` or `{python: mod:fn}`."""
    known = ", ".join(AGGREGATIONS)
    if spec == "count":
        return AggregationSpec("count", None)
    if isinstance(spec, str):
        raise ValueError(f"unknown aggregation {spec!r} (known: {known})")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError("an aggregation is `count` or a one-key mapping such as {sum: amount}")
    ((fn, arg),) = spec.items()
    if fn not in AGGREGATIONS or fn == "count":
        raise ValueError(f"unknown aggregation {fn!r} (known: {known})")
    if isinstance(arg, dict) and fn in _LIMITED:
        unknown = set(arg) - {"field", "limit"}
        limit = arg.get("limit")
        if unknown or not isinstance(arg.get("field"), str):
            raise ValueError(f"{fn} takes {{field: path, limit: N}}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= 100_000:
            raise ValueError(f"{fn} limit must be an integer from 1 to 100000")
        return AggregationSpec(str(fn), arg["field"], limit)
    if not isinstance(arg, str) or not arg:
        raise ValueError(f"{fn} needs a field path, e.g. {{{fn}: amount}}")
    if fn == "python" and ":" not in arg:
        raise ValueError("python needs `module:function`, e.g. {python: mypkg.reducers:top3}")
    default = {"distinct_count": DISTINCT_EXACT, "collect": COLLECT_MAX}.get(str(fn))
    return AggregationSpec(str(fn), arg, default)


Aggregation = Annotated[AggregationSpec, BeforeValidator(_aggregation)]


def _millis(value: object) -> int:
    return round(parse_duration(value) * 1000)


def _grace(value: object) -> int:
    """Grace may be zero (Kafka Streams' `ofSizeWithNoGrace`)."""
    if value in (0, "0", "0s", "0ms"):
        return 0
    return _millis(value)


Millis = Annotated[int, BeforeValidator(_millis)]
Grace = Annotated[int, BeforeValidator(_grace)]


class Tumbling(Strict):
    """`[start, start + size)`, aligned to epoch 0, one window per record."""

    type: Literal["tumbling"]
    size: Millis
    grace: Grace = 0

    @property
    def step(self) -> int:
        return self.size


class Hopping(Strict):
    """Windows of `size` every `step`, aligned to epoch 0; a record is in each that holds it."""

    type: Literal["hopping"]
    size: Millis
    step: Millis
    grace: Grace = 0

    @model_validator(mode="after")
    def _step_fits(self) -> Hopping:
        if self.step > self.size:
            raise ValueError("step must not exceed size (windows would leave gaps)")
        return self


class Session(Strict):
    """Records at most `gap` apart in one session, `[first, last]` event time."""

    type: Literal["session"]
    gap: Millis
    grace: Grace = 0


class Sliding(Strict):
    """Kafka Streams' `SlidingWindows`: `[start, start + size]`, both ends inclusive, one
    window per distinct set of records within `size` of each other."""

    type: Literal["sliding"]
    size: Millis
    grace: Grace = 0


Window = Annotated[Tumbling | Hopping | Session | Sliding, Field(discriminator="type")]


class Aggregate(Strict):
    """A keyed aggregate; with `window`, one aggregate per key and window."""

    id: Annotated[str, Field(pattern=NAME)]
    key: str = Field(description="field path of the group key")
    compute: dict[str, Aggregation] = Field(min_length=1)
    time: str | None = Field(
        None, description="event-time field (epoch ms or ISO 8601); absent: the record's"
    )
    window: Window | None = None
    emit: Literal["on_close", "on_update"] | None = Field(
        None, description="default: on_close with a window, on_update without"
    )
    on_late: Literal["dead_letter", "drop"] = Field(
        "dead_letter", description="a record too late for every window it falls in"
    )
    ttl: Millis | None = Field(
        None,
        description="without a window: a key expires this long after its latest event time, "
        "by stream time",
    )

    @model_validator(mode="after")
    def _emit_needs_window(self) -> Aggregate:
        if self.emit == "on_close" and self.window is None:
            raise ValueError("emit: on_close needs a window")
        if self.ttl is not None and self.window is not None:
            raise ValueError(
                "ttl is for aggregates without a window: a window's state is removed when it "
                "closes (after its grace)"
            )
        reserved = {"window_start", "window_end", "window_start_iso", "window_end_iso"}
        if self.window is not None and (clash := reserved & set(self.compute)):
            raise ValueError(f"{sorted(clash)} are reserved for the window bounds")
        return self

    @property
    def emits_on_close(self) -> bool:
        return self.emit == "on_close" or (self.emit is None and self.window is not None)
