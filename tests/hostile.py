"""Hypothesis strategies for hostile input: records a producer could send, topology files a
person could write, expressions an attacker could try."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import strategies as st

from tidemark.config import load_topology
from tidemark.features.validation import FeatureViolation, Gate
from tidemark.operators import Event, RecordError, build_pipeline
from tidemark.operators.events import iso
from tidemark.operators.join import TableRecord
from tidemark.operators.memory import InMemoryState
from tidemark.processor.runtime.decoding import Decoder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "config/examples").glob("*.yaml"))
FIELDS = ["user_id", "amount", "status", "quantity", "price", "country", "order_id", "ts"]


@dataclass(frozen=True)
class Pairs:
    """A JSON object written with its keys as given, duplicates included."""

    items: list[tuple[str, Any]]


def render(value: Any) -> str:
    """JSON text as a careless producer writes it: NaN, Infinity, huge integers, duplicates."""
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value.items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value)  # floats nan/inf become NaN/Infinity


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**90), max_value=2**90),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["paid", "good", "", "0", "NL"]),
)
_tree = st.recursive(
    _leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.lists(
            st.tuples(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), kids), max_size=5
        ).map(Pairs),
    ),
    max_leaves=12,
)
_object = st.lists(st.tuples(st.sampled_from(FIELDS), _tree), max_size=8).map(Pairs)


def _deep(depth: int) -> bytes:
    return b'{"user_id": "d", "amount": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


_value = st.one_of(
    _object.map(lambda o: render(o).encode()),
    st.binary(max_size=64),
    st.integers(min_value=10, max_value=5000).map(_deep),
    st.integers(min_value=1, max_value=300_000).map(
        lambda n: orjson.dumps({"user_id": "h" * n, "amount": 1, "status": "paid"})
    ),
    st.integers(min_value=1, max_value=50_000).map(
        lambda n: orjson.dumps({"user_id": "a", "amount": [1] * n, "country": ["x"] * n})
    ),
    st.sampled_from(
        [
            b'{"user_id": "\xff\xfe", "amount": 1}',
            b'{"user_id": "u", "amount": NaN}',
            b'{"user_id": "u", "amount": 1e999}',
            b'{"user_id": "u", "amount": 9223372036854775807}',
            b'{"user_id": "u", "amount": 18446744073709551616}',
            b'{"user_id": "u", "user_id": 7, "amount": 2}',
            b"",
            b"null",
            b"[]",
        ]
    ),
)
_key = st.one_of(st.none(), st.binary(max_size=16))

hostile_records = st.lists(st.tuples(_key, _value), min_size=1, max_size=40)


MINUTE = 60_000
# Event times of today: outputs carry them as their Kafka timestamps, which retention checks.
_MIDNIGHT = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(tzinfo=dt.UTC))
_TODAY = int(_MIDNIGHT.timestamp()) * 1000


def good_records(example: Path, marker: str, n: int) -> list[tuple[bytes, bytes]]:
    """Well-formed records for an example topology, keyed by groups named after `marker`."""
    records = []
    for i in range(n):
        if example.stem == "clicks-per-user":
            doc: dict[str, Any] = {"user_id": f"{marker}-{i % 7}", "amount": i % 5 + 1}
        elif example.stem == "iot-device-stats":
            sent = i - 1 if i % 5 == 4 else i  # every fifth record resends the one before
            doc = {
                "device_id": f"{marker}-{sent % 4}",
                "reading_id": f"{marker}-r{sent}",
                "ts": 1_700_000_000_000 + sent * 20_000,
                "temperature": 18.5 + sent % 7,
            }
        elif example.stem == "clickstream-sessions":
            visit, step = divmod(i, 6)  # six events a visit, visits 40 minutes apart
            t = _TODAY + visit * 40 * MINUTE + step * 3 * MINUTE
            doc = {
                "user_id": f"{marker}-{visit % 3}",
                "event_type": "click" if step == 4 else "page_view",
                "page": f"/p{(i * 5) % 7}",
                "ts": iso(t) if visit % 2 else t,  # ISO 8601 or epoch ms
            }
        elif example.stem == "payment-fraud-velocity":
            card = i % 3  # card 0 pays from three countries: its windows are alerts
            doc = {
                "card_id": f"{marker}-{card}",
                "amount": 5 + i % 7 * 2.5,
                "merchant_id": f"m-{i % 5}",
                "country": ("NL", "DE", "FR")[i // 3 % 3] if card == 0 else "NL",
                "ts": _TODAY + i * 40_000,
            }
        elif example.stem == "user-features":
            doc = {
                "user_id": f"{marker}-{i % 5}",
                "amount": round(i % 7 * 1.25, 2),
                "country": ("NL", "DE", None)[i % 3],
                "ts": _TODAY + i * 60_000,
            }
        elif example.stem == "orders-with-customers":
            doc = {
                "order_id": i,
                "customer_id": f"{marker}-{i % 4}",
                "quantity": i % 3 + 1,
                "price": 10.5 + i,
            }
        else:
            doc = {
                "order_id": i,
                "status": "paid",
                "quantity": i % 3 + 1,
                "price": 10.5 + i,
                "country": f"{marker}-{i % 4}",
            }
        key = doc.get("customer_id", str(i))  # a join's stream is keyed by its join key
        records.append((key.encode(), orjson.dumps(doc)))
    return records


def interleave(
    good: list[tuple[bytes, bytes]], bad: list[tuple[bytes | None, bytes]], pick: Callable[[], int]
) -> list[tuple[bytes | None, bytes]]:
    """`good` in order with `bad` records inserted where `pick()` says."""
    mixed: list[tuple[bytes | None, bytes]] = list(good)
    for record in bad:
        mixed.insert(pick() % (len(mixed) + 1), record)
    return mixed


BATCH = 16


class NoRows:
    """A table partition with nothing in it: joins find no row."""

    async def head(self, position: int) -> TableRecord | None:
        return None


def run_in_memory(
    example: Path, records: list[tuple[bytes | None, bytes]]
) -> tuple[list[Event], dict[int, str], dict[str, Any]]:
    """What a worker must make of `records` (one partition, offsets from 0): outputs,
    rejections (offset: reason) and the final state, run in small batches."""
    topology = load_topology(example, env={})
    pipeline = build_pipeline(topology)
    states = {op: InMemoryState() for op in pipeline.stateful_ids}
    feeds = {table: NoRows() for table in pipeline.tables}
    decoder = Decoder(topology.source)
    gate = Gate(topology.feature_group) if topology.feature_group else None
    outputs: list[Event] = []
    rejected: dict[int, str] = {}

    def reject(event: Event, exc: RecordError) -> None:
        rejected[event.offset] = str(exc)

    for start in range(0, len(records), BATCH):
        events = []
        for offset, (key, value) in enumerate(records[start : start + BATCH], start):
            try:
                events.append(decoder.decode(key, value, offset, 0))
            except RecordError as exc:
                rejected[offset] = str(exc)
        for out in asyncio.run(pipeline.process(events, states, reject, feeds)):
            try:  # a features sink's gates, as the batch processor applies them
                if gate is not None and out.topic is None:
                    gate.row(out.value, out.key, out.timestamp, 0, out.offset)
                outputs.append(out)
            except FeatureViolation as exc:
                rejected[out.offset] = str(exc)
    final = {op: {k: s.value for k, s in st.data.items()} for op, st in states.items()}
    return outputs, rejected, final


# -- topology files -----------------------------------------------------------------------

_yaml_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["1s", "99999999999999999999d", "0ms", "-1s", "nan", "1e400s", "${HOME}"]),
)
_yaml_tree = st.recursive(
    _yaml_leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=15,
)
hostile_expressions = st.one_of(
    st.sampled_from(
        [
            "().__class__.__bases__[0].__subclasses__()",
            "amount.__class__",
            "__import__('os').system('true')",
            "open('/etc/passwd').read()",
            "eval('1')",
            "exec('x=1')",
            "[c for c in ().__class__.__mro__]",
            "lambda: 1",
            "9 ** 9 ** 9",
            "amount ** amount ** amount",
            "4000000 ** 4000000",
            "'x' * 10 ** 9",
            "1 << 10 ** 6",
            "amount << 100000",
            "str(amount) * 100000000",
            "getattr(amount, '__class__')",
            "globals()",
            "(lambda f: f(f))(lambda f: f(f))",
            "int('9' * 5000)",
        ]
    ),
    st.text(max_size=30),
    st.lists(st.sampled_from(["amount", "**", "*", "<<", "9", "(", ")", " ", "'a'", "len"])).map(
        "".join
    ),
)


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The example with one value replaced somewhere, or a key added."""

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(node, dict):
            for k, v in node.items():
                found += paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                found += paths(v, (*prefix, i))
        return found

    def apply(path: tuple[Any, ...], value: Any, add_key: str | None) -> dict[str, Any]:
        doc = yaml.safe_load(yaml.safe_dump(base))
        if not path:
            return doc
        node = doc
        for part in path[:-1]:
            node = node[part]
        if add_key is not None and isinstance(node[path[-1]], dict):
            node[path[-1]][add_key] = value
        else:
            node[path[-1]] = value
        return doc

    replacement = st.one_of(_yaml_tree, hostile_expressions)
    return st.builds(
        apply, st.sampled_from(paths(base)), replacement, st.none() | st.text(max_size=8)
    )


def hostile_topologies() -> st.SearchStrategy[str]:
    """YAML text: random trees, and the examples with something broken in them."""
    bases = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    docs = st.one_of(_yaml_tree, *[_mutations(b) for b in bases])
    return st.one_of(
        docs.map(lambda d: yaml.safe_dump(d, allow_unicode=True)), st.text(max_size=200)
    )
