"""The direct path (`Decoder.folded` + `KeyedAggregate.fold_batch`) gives what the general
one (`Decoder.decode` + `Pipeline.process`) gives: outputs, rejections with their reasons
and messages, and state, for any records, aggregations and state left by a crash."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import yaml
from confluent_kafka import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tidemark.config.loader import parse_topology
from tidemark.config.model import Aggregate, Topology
from tidemark.operators import Event, InMemoryState, RecordError, Stamped, _direct, build_pipeline
from tidemark.operators.aggregate import KeyedAggregate
from tidemark.processor.runtime.batch import BatchProcessor
from tidemark.processor.runtime.decoding import Decoder

FIELDS = ["x", "y"]
FUNCTIONS = ["count", "sum", "min", "max", "avg", "first", "last", "collect", "distinct_count"]


def topology(
    compute: dict[str, Any],
    source_key: str | None,
    time: str | None = None,
    key: str = "user",
    **extra: Any,
) -> Topology:
    source = {"topic": "in", **({"key": source_key} if source_key else {})}
    spec = {
        "name": "direct",
        "kafka": {"bootstrap_servers": "localhost:9092"},
        "mongo": {"uri": "mongodb://localhost", "database": "d"},
        "source": source | ({"time": time} if time else {}),
        "pipeline": [{"aggregate": {"id": "agg", "key": key, "compute": compute, **extra}}],
        "sink": {"topic": "out"},
    }
    return parse_topology(yaml.safe_dump(spec))


_number = st.one_of(
    st.sampled_from([2**63 - 1, -(2**63), 2**62, 1, -1, 0.5, -1e308, 1e308]),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
_other = st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.just({"a": 1}))
_field = st.one_of(_number, _number, _number, _other)
_key = st.one_of(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from([7, "", None, True, 1.5]))
# An event time (`source.time: ts`) or not one; padding past the 400 bytes the C decodes.
_extra = {
    "ts": st.one_of(st.integers(0, 2**41), st.sampled_from(["2026-01-01T00:00:00Z", "x", None])),
    "pad": st.just("p" * 400),
    "g": st.one_of(st.fixed_dictionaries({"user": _key}), _key),  # a nested key: `g.user`
}
_optional = dict.fromkeys(FIELDS, _field) | _extra
_record = st.one_of(
    st.fixed_dictionaries({"user": _key}, optional=_optional).map(orjson.dumps),
    st.fixed_dictionaries({}, optional=_optional).map(orjson.dumps),
    st.sampled_from([b"", b"[1]", b"{", b'"s"', b'{"user": "u1", "x": 1}' * 2]),
)
_compute = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.tuples(st.sampled_from(FUNCTIONS), st.sampled_from([*FIELDS, "x.z"])),
    min_size=1,
    max_size=4,
).map(lambda d: {name: "count" if f == "count" else {f: path} for name, (f, path) in d.items()})

# Only what the native fold covers: plain aggregations of top-level fields.
_native_compute = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.tuples(
        st.sampled_from(["count", "sum", "min", "max", "first", "last"]), st.sampled_from(FIELDS)
    ),
    min_size=1,
    max_size=4,
).map(lambda d: {name: "count" if f == "count" else {f: path} for name, (f, path) in d.items()})


def _stored(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, tuple[Any, int]]]:
    """What a crash left: a value (None: deleted) stamped at some offset, per key."""
    return st.dictionaries(
        st.sampled_from(["u1", "u2", "7"]), st.tuples(values, st.integers(-1, 40)), max_size=3
    )


# Accumulators of numbers under any of the names: what the plain aggregations store.
_numbers = st.dictionaries(st.sampled_from(["a", "b", "c", "z"]), _number, max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    compute=_compute,
    source_key=st.sampled_from([None, "user"]),
    records=st.lists(_record, max_size=40),
    stored=_stored(st.none()),
    batch=st.integers(1, 16),
)
def test_the_direct_path_is_the_general_path(
    compute: dict[str, Any],
    source_key: str | None,
    records: list[bytes],
    stored: dict[str, tuple[Any, int]],
    batch: int,
) -> None:
    _compare(topology(compute, source_key), records, stored, batch, native=False, emit_from=0)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    compute=_native_compute,
    records=st.lists(_record, max_size=40),
    stored=_stored(st.one_of(st.none(), _numbers)),
    batch=st.integers(1, 16),
    emit_from=st.integers(0, 40),
    time=st.sampled_from([None, "ts"]),
    key=st.sampled_from(["user", "g.user"]),
    keyed_by_source=st.booleans(),
)
@example(  # state holding a name the step no longer computes: the output leaves it out
    compute={"a": "count"},
    records=[b'{"user": "u1"}'],
    stored={"u1": ({"z": 1}, -1)},
    batch=1,
    emit_from=0,
    time=None,
    key="user",
    keyed_by_source=True,
)
@example(  # a key folded again after a flush took its accumulator: copied, not changed
    compute={"a": "count"},
    records=[b'{"user": "u1"}'] * 4,
    stored={},
    batch=1,
    emit_from=0,
    time=None,
    key="user",
    keyed_by_source=True,
)
def test_the_native_fold_is_the_general_path(
    compute: dict[str, Any],
    records: list[bytes],
    stored: dict[str, tuple[Any, int]],
    batch: int,
    emit_from: int,
    time: str | None,
    key: str,
    keyed_by_source: bool,
) -> None:
    """`fold_encoded` (in C) against the general path: the same outputs, encoded byte for
    byte, the same rejections and state, and the store's accumulators never changed."""
    t = topology(compute, key if keyed_by_source else None, time, key)
    _compare(t, records, stored, batch, native=True, emit_from=emit_from)


def _compare(
    t: Topology,
    records: list[bytes],
    stored: dict[str, tuple[Any, int]],
    batch: int,
    native: bool,
    emit_from: int,
) -> None:
    general, direct = build_pipeline(t), build_pipeline(t)
    op = direct.direct
    assert op is not None
    assert op.encodes or not native
    decoder = Decoder(t.source)
    states = [InMemoryState(), InMemoryState()]
    for state in states:  # what a crash left: accumulators stamped at some offset
        state.data = {k: Stamped(copy.deepcopy(v), off) for k, (v, off) in stored.items()}
    rejections: list[set[tuple[Any, ...]]] = [set(), set()]
    outputs: list[list[tuple[bytes, bytes, int]]] = [[], []]  # (key, JSON value, time), in order

    def rejected(side: int) -> Any:
        def on_error(event: Event, exc: RecordError) -> None:
            rejections[side].add((event.offset, exc.reason, str(exc)))

        return on_error

    starts = list(range(0, len(records), batch))
    for start in starts + starts[-1:]:  # the last batch twice: a duplicate delivery
        chunk = list(enumerate(records[start : start + batch], start))
        events = []
        for offset, value in chunk:
            try:
                events.append(decoder.decode(b"kafka-key", value, offset, 1000 + offset))
            except RecordError as exc:
                rejected(0)(Event(None, value, offset, 0), exc)
        outs = asyncio.run(general.process(events, {"agg": states[0]}, rejected(0)))
        outputs[0].extend(
            (o.key.encode(), orjson.dumps(o.value), o.timestamp)
            for o in outs
            if o.key is not None and o.offset >= emit_from
        )

        messages = [Message(offset=o, value=v, timestamp=(1, 1000 + o)) for o, v in chunk]
        failures: dict[int, RecordError] = {}
        keys: set[str] = set()
        fields = op.fields if native else None
        folded = decoder.folded(messages, op.key_path, failures, keys, fields)
        assert keys == {k for k, _, _, _ in folded}
        assert fields is None or all(set(v) <= set(fields) for _, v, _, _ in folded)
        rejections[1].update((o, e.reason, str(e)) for o, e in failures.items())
        read = op.unheld if native else op.latest
        latest = asyncio.run(read(keys, states[1]))
        held = {k: (v.value, copy.deepcopy(v.value)) for k, v in states[1].data.items()}
        if native:
            outputs[1] += op.fold_encoded(folded, latest, states[1], rejected(1), emit_from)
            if start // batch % 2:  # a flush every other batch: values shared with it
                states[1].settle(entries=2)  # and most keys evicted, to be read again
        else:
            outs2 = op.fold_batch(folded, latest, states[1], rejected(1))
            outputs[1].extend((k.encode(), orjson.dumps(v), ts) for k, v, _, ts in outs2)
        for obj, as_read in held.values():
            assert obj == as_read  # the store's accumulators are never changed in place

    assert rejections[1] == rejections[0]
    assert outputs[1] == outputs[0]
    states[1].settle()
    assert states[1].data == states[0].data


def test_a_batch_reads_only_the_keys_its_table_lacks() -> None:
    assert sorted(_direct.missing({"a", "b", "c"}, {"b": None})) == ["a", "c"]
    assert _direct.missing(set(), {"b": None}) == []


def test_a_source_key_other_than_the_aggregate_s_keeps_the_general_path() -> None:
    """Only `decode` checks the source key; the direct path reads the aggregate's."""

    def direct(t: Topology) -> bool:
        processor = BatchProcessor(t, build_pipeline(t), None, False)  # type: ignore[arg-type]
        return processor._direct is not None

    count = {"n": "count"}
    assert direct(topology(count, "user"))
    assert direct(topology(count, None, key="g.user"))
    assert not direct(topology(count, "user", key="g.user"))


def test_only_a_lone_keyed_aggregate_takes_the_direct_path() -> None:
    count = {"n": "count"}
    assert build_pipeline(topology(count, "user")).direct is not None
    assert build_pipeline(topology(count, None)).direct is not None
    windowed = topology(count, "user", window={"type": "tumbling", "size": "10s"})
    assert build_pipeline(windowed).direct is None
    assert build_pipeline(topology(count, "user", ttl="1h")).direct is None


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@example(compute={"t": {"sum": "x"}}, values=[{"x": 2**63 - 1}, {"x": 1}])
@given(
    compute=_compute,
    values=st.lists(st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, _field)), max_size=8),
)
def test_folded_is_fold_on_a_copy(compute: dict[str, Any], values: list[dict[str, Any]]) -> None:
    """The inline fold against each aggregation's own `fold`: same accumulators, same
    errors, and the stored accumulator left as it was."""
    accumulators = KeyedAggregate(
        Aggregate.model_validate({"id": "a", "key": "user", "compute": compute})
    )._acc
    stored: dict[str, Any] = {}
    for value in values:
        expected: Any = dict(stored)
        try:
            for aggregation in accumulators.aggregations:
                aggregation.fold(expected, value)
        except RecordError as exc:
            expected = (exc.reason, str(exc))
        before = dict(stored)
        try:
            got: Any = accumulators.folded(stored, value)
        except RecordError as exc:
            got = (exc.reason, str(exc))
        assert got == expected
        assert stored == before
        if isinstance(got, dict):
            stored = got
