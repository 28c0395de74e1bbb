"""Sample events for `tidemark demo`.

The examples in `config/examples/` have a generator each, found by the topology's name;
any other topology gets records made up from the fields its pipeline reads (the key and
time fields, what the aggregations and expressions use). Event times are of the last hours
up to now (outputs carry them as their Kafka timestamp, and the broker deletes records
stamped long ago), a little out of order but never by more than a window's grace.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable
from typing import Any

from tidemark.config import Topology
from tidemark.config.aggregation import Aggregate
from tidemark.config.model import (
    AggregateStep,
    DedupeStep,
    FilterStep,
    FlatMapStep,
    JoinStep,
    MapStep,
    PythonStep,
    RenameStep,
    RouteStep,
    field_path,
)
from tidemark.operators.events import iso
from tidemark.operators.expressions import FUNCTIONS

Record = tuple[str | None, dict[str, Any]]  # Kafka key, JSON value
Row = tuple[str, dict[str, Any] | None]  # a table's: key, JSON value (None deletes the key)
Generator = Callable[[random.Random, int, int], list[Record]]  # rng, count, now (epoch ms)

MINUTE = 60_000
HOUR = 60 * MINUTE


def sample_records(
    topology: Topology, count: int, now: int, seed: int | None = None
) -> list[Record]:
    """`count` records for the topology's source, in the order to produce them."""
    rng = random.Random(seed)
    make = GENERATORS.get(topology.name)
    return make(rng, count, now) if make else derived(topology, rng, count, now)


def describe(topology: Topology) -> str:
    """Where the samples come from, for the demo's first line."""
    if topology.name in GENERATORS:
        return f"the {topology.name} example's generator"
    return "made up from the fields the pipeline reads"


def _in_arrival_order(
    timed: list[tuple[int, Record]], rng: random.Random, jitter: int
) -> list[Record]:
    """Records by event time, each moved up to `jitter` ms later: out of order, never late."""
    timed = sorted(timed, key=lambda tr: tr[0] + rng.uniform(0, jitter))
    return [record for _, record in timed]


# -- one generator per example -------------------------------------------------------------


def _clicks(rng: random.Random, count: int, now: int) -> list[Record]:
    users = [f"user-{i:02d}" for i in range(20)]
    records: list[Record] = []
    for _ in range(count):
        user = rng.choice(users)
        amount = round(rng.uniform(-5, 50), 2)
        records.append((user, {"user_id": user, "amount": amount, "page": rng.randrange(9)}))
    return records


def _orders(rng: random.Random, count: int, now: int) -> list[Record]:
    countries = ["nl", "de", "fr", "be", "es", "it"]
    records: list[Record] = []
    for i in range(count):
        country = rng.choice(countries)
        order = {
            "order_id": f"o-{now // 1000}-{i}",
            "status": rng.choices(["paid", "pending", "cancelled"], [8, 1, 1])[0],
            "quantity": rng.randrange(0, 5),
            "price": round(rng.uniform(2, 80), 2),
            "country": country,
        }
        records.append((country, order))
    return records


def _iot(rng: random.Random, count: int, now: int) -> list[Record]:
    """Eight devices reading every few seconds over the last hour; 1 in 20 resent."""
    devices = [f"sensor-{i:02d}" for i in range(8)]
    every = max(1, HOUR * len(devices) // max(count, 1))
    timed: list[tuple[int, Record]] = []
    while len(timed) < count:
        device = devices[len(timed) % len(devices)]
        t = now - HOUR + len(timed) // len(devices) * every + rng.randrange(1000)
        base = 19 + devices.index(device) % 4
        reading = {
            "device_id": device,
            "reading_id": f"{rng.getrandbits(64):016x}",
            "ts": t,
            "temperature": round(base + rng.gauss(0, 0.8), 1),
        }
        timed.append((t, (device, reading)))
        if rng.random() < 0.05 and len(timed) < count:  # not acknowledged: sent again
            timed.append((t + 2000, (device, dict(reading))))
    return _in_arrival_order(timed, rng, 20_000)


PAGES = ["/", "/products", "/products/42", "/products/7", "/cart", "/checkout", "/blog", "/faq"]


def _sessions(rng: random.Random, count: int, now: int) -> list[Record]:
    """Users visiting once or twice over the last three hours (one user per eight events):
    visits of a few page views up to four minutes apart, with clicks and scrolls between."""
    users = [f"user-{i:04d}" for i in range(max(10, count // 8))]
    timed: list[tuple[int, Record]] = []
    while len(timed) < count:
        user = rng.choice(users)
        t = now - 3 * HOUR + rng.randrange(3 * HOUR - 10 * MINUTE)
        page = "/"
        for _ in range(rng.randint(1, 12)):
            kind = rng.choices(["page_view", "click", "scroll"], [6, 2, 1])[0]
            page = rng.choice(PAGES) if kind == "page_view" else page
            stamp: str | int = iso(t) if rng.random() < 0.5 else t  # ISO 8601 or epoch ms
            event = {"user_id": user, "event_type": kind, "page": page, "ts": stamp}
            timed.append((t, (user, event)))
            t += rng.randrange(5_000, 4 * MINUTE)
    return _in_arrival_order(timed[:count], rng, 30_000)


COUNTRIES = ["NL", "DE", "FR", "BE", "GB", "US", "BR", "NG"]


def _payments(rng: random.Random, count: int, now: int) -> list[Record]:
    """Cards paying at home, a few times in ten minutes on average (one card per 25
    events); one payment in forty is a stolen card's first: a burst of four to twelve
    payments within minutes, from three countries or more, at least a quarter of an hour
    ago (so that the demo sees its windows close)."""
    homes = {
        f"card-{rng.getrandbits(32):08x}": rng.choice(COUNTRIES[:4])
        for _ in range(count // 25 + 10)
    }
    cards = list(homes)
    timed: list[tuple[int, Record]] = []
    while len(timed) < count:
        card = rng.choice(cards)
        stolen = len(timed) % 40 == 5
        t = now - HOUR + rng.randrange(HOUR - (15 if stolen else 2) * MINUTE)
        where = rng.sample(COUNTRIES, 3) if stolen else [homes[card]]
        for i in range(rng.randint(4, 12) if stolen else 1):
            payment = {
                "card_id": card,
                "amount": round(rng.uniform(20, 900) if stolen else rng.uniform(3, 120), 2),
                "merchant_id": f"m-{rng.randrange(300 if stolen else 12):03d}",
                "country": where[i] if i < len(where) else rng.choice(COUNTRIES),
                "ts": t,
            }
            timed.append((t, (card, payment)))
            t += rng.randrange(5_000, 90_000)
    return _in_arrival_order(timed[:count], rng, 20_000)


TIERS = ["bronze", "silver", "gold"]


def _customers(rng: random.Random, count: int, now: int) -> dict[str, list[Row]]:
    """One row per customer (one per ten orders), two moved up to gold, the last deleted."""
    ids = [f"cust-{i:03d}" for i in range(max(5, count // 10))]
    first = {
        c: {
            "name": f"Customer {c[5:]}",
            "tier": rng.choice(TIERS),
            "country": rng.choice(COUNTRIES),
        }
        for c in ids
    }
    rows: list[Row] = list(first.items())
    rows += [(c, {**first[c], "tier": "gold"}) for c in rng.sample(ids, 2)]
    rows.append((ids[-1], None))  # a tombstone: this customer's orders get null fields
    return {"customers": rows}


def _customer_orders(rng: random.Random, count: int, now: int) -> list[Record]:
    """Orders of the customers above, one in twenty of a customer the table does not know."""
    known = max(5, count // 10)
    records: list[Record] = []
    for i in range(count):
        number = rng.randrange(known) if rng.random() >= 0.05 else 900 + rng.randrange(99)
        customer = f"cust-{number:03d}"
        order = {
            "order_id": f"o-{now // 1000}-{i}",
            "customer_id": customer,
            "quantity": rng.randint(1, 4),
            "price": round(rng.uniform(2, 80), 2),
        }
        records.append((customer, order))
    return records


def _user_clicks(rng: random.Random, count: int, now: int) -> list[Record]:
    """Thirty users clicking over the last three hours."""
    users = [f"user-{i:02d}" for i in range(30)]
    timed: list[tuple[int, Record]] = []
    for i in range(count):
        user = rng.choice(users)
        t = now - 3 * HOUR + i * 3 * HOUR // max(count, 1)
        amount = round(rng.uniform(0, 40), 2)
        click = {"user_id": user, "ts": t, "amount": amount, "country": rng.choice(COUNTRIES)}
        timed.append((t, (user, click)))
    return _in_arrival_order(timed, rng, 2000)


GENERATORS: dict[str, Generator] = {
    "clicks-per-user": _clicks,
    "orders-per-country": _orders,
    "iot-device-stats": _iot,
    "clickstream-sessions": _sessions,
    "payment-fraud-velocity": _payments,
    "orders-with-customers": _customer_orders,
    "user-features": _user_clicks,
}
TableGenerator = Callable[[random.Random, int, int], dict[str, list[Row]]]
TABLES: dict[str, TableGenerator] = {"orders-with-customers": _customers}


def sample_tables(
    topology: Topology, count: int, now: int, seed: int | None = None
) -> dict[str, list[Row]]:
    """Rows for the topology's tables, by table name, to produce before the events (empty
    for a topology without a generator: its joins then find no rows)."""
    make = TABLES.get(topology.name)
    return make(random.Random(seed), count, now) if make else {}


# -- any other topology ----------------------------------------------------------------------


class _Fields:
    """What the pipeline reads from the source records: each field's kind and hints."""

    def __init__(self) -> None:
        self.kinds: dict[tuple[str, ...], str] = {}  # key, id, time, number, text, items
        self.choices: dict[tuple[str, ...], list[Any]] = {}
        self.items: dict[tuple[str, ...], set[str]] = {}  # flat_map arrays: element keys
        self.made: set[str] = set()  # fields a step set; later reads are not the source's
        self.aliases: dict[str, str] = {}  # renamed field: its name in the source
        self.done = False  # past an aggregate: later steps read its outputs

    def resolve(self, path: str) -> tuple[str, ...]:
        """The field's path in the source record (a renamed field under its old name)."""
        parts = field_path(path)
        alias = self.aliases.get(parts[0]) if parts else None
        return (*field_path(alias), *parts[1:]) if alias else parts

    def need(self, path: str, kind: str) -> None:
        if self.done or not field_path(path) or field_path(path)[0] in self.made:
            return
        parts = self.resolve(path)
        if self.kinds.get(parts) in (None, "number"):  # key, id, time, items: as given
            self.kinds[parts] = kind

    def read(self, expression: str) -> None:
        """Fields an expression reads; strings or numbers it compares them with."""
        tree = ast.parse(expression, mode="eval")
        calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        texts = {
            id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) for a in n.args
        }  # upper(country), len(name): text
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                names = [s for s in sides if isinstance(s, ast.Name)]
                for name in names:
                    for const in (s for s in sides if isinstance(s, ast.Constant)):
                        self.choices.setdefault(self.resolve(name.id), []).append(const.value)
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                index = node.slice
                if isinstance(index, ast.Constant) and isinstance(index.value, str):
                    self.items.setdefault(self.resolve(node.value.id), set()).add(index.value)
            if isinstance(node, ast.Name) and id(node) not in calls and node.id not in FUNCTIONS:
                self.need(node.id, "text" if id(node) in texts else "number")

    def aggregate(self, spec: Aggregate) -> None:
        self.need(spec.key, "key")
        if spec.time:
            self.need(spec.time, "time")
        for agg in spec.compute.values():
            if agg.field and agg.function in ("sum", "min", "max", "avg"):
                self.need(agg.field, "number")
            elif agg.field and agg.function != "python":
                self.need(agg.field, "text")
        self.done = True


def _fields(topology: Topology) -> _Fields:
    fields = _Fields()
    if topology.source.key:
        fields.need(topology.source.key, "key")
    if topology.source.time:
        fields.need(topology.source.time, "time")
    for step in topology.pipeline:
        if isinstance(step, FilterStep):
            fields.read(step.filter)
        elif isinstance(step, MapStep):
            for expression in step.map.values():
                fields.read(expression)
            fields.made.update(step.map)
        elif isinstance(step, RenameStep):
            for old, new in step.rename.items():
                fields.aliases[new] = fields.aliases.get(old, old)
        elif isinstance(step, FlatMapStep):
            fields.need(step.flat_map.field, "items")
            if step.flat_map.as_:
                fields.aliases[step.flat_map.as_] = step.flat_map.field
        elif isinstance(step, RouteStep):
            for branch in step.route:
                if branch.when:
                    fields.read(branch.when)
        elif isinstance(step, DedupeStep):
            fields.need(step.dedupe.key, "id")
            if step.dedupe.time:
                fields.need(step.dedupe.time, "time")
        elif isinstance(step, PythonStep) and step.python.key:
            fields.need(step.python.key, "key")
        elif isinstance(step, JoinStep):
            fields.need(step.join.on, "key")
            fields.made.update(step.join.fields or [])
        elif isinstance(step, AggregateStep):
            fields.aggregate(step.aggregate)
    return fields


def _span(topology: Topology) -> int:
    """How far back event times go: ten of the longest window, one to six hours."""
    longest = 0
    for spec in topology.aggregates():
        window = spec.window
        if window is not None:
            longest = max(longest, getattr(window, "size", 0), getattr(window, "gap", 0))
    return min(max(10 * longest, HOUR), 6 * HOUR)


def _grace(topology: Topology) -> int:
    graces = [s.window.grace for s in topology.aggregates() if s.window is not None]
    return min(graces, default=0)


def derived(topology: Topology, rng: random.Random, count: int, now: int) -> list[Record]:
    """Records with every field the pipeline reads: keys from a dozen values, ids mostly
    unique, times spread up to now, strings and numbers from what expressions compare
    them with (or made up), arrays of one to three objects."""
    fields = _fields(topology)
    span = _span(topology)
    ids: list[str] = []

    def value(path: tuple[str, ...], kind: str, t: int) -> Any:
        options = fields.choices.get(path, [])
        texts = [o for o in options if isinstance(o, str)]
        numbers = [o for o in options if isinstance(o, int | float) and not isinstance(o, bool)]
        if kind == "time":
            return t
        if kind == "id":
            if ids and rng.random() < 0.05:
                return rng.choice(ids[-20:])  # a resend
            ids.append(f"{rng.getrandbits(64):016x}")
            return ids[-1]
        if kind == "items":
            keys = sorted(fields.items.get(path, set()) or {"value"})
            return [{k: rng.randrange(1, 20) for k in keys} for _ in range(rng.randint(1, 3))]
        if texts and rng.random() < 0.8:
            return rng.choice(texts)
        if numbers and not texts and kind != "key":
            if rng.random() < 0.5:
                return rng.choice(numbers) + rng.choice([-1, 0, 1, 10])
            return round(rng.uniform(0, 100), 2)
        if kind in ("key", "text") or texts:
            return f"{path[-1]}-{rng.randrange(12 if kind == 'key' else 8)}"
        return round(rng.uniform(0, 100), 2)

    timed: list[tuple[int, Record]] = []
    for i in range(count):
        t = now - span + span * i // max(count, 1)
        doc: dict[str, Any] = {}
        for path, kind in fields.kinds.items():
            _set(doc, path, value(path, kind, t))
        key = _key(topology, doc)
        timed.append((t, (key, doc)))
    return _in_arrival_order(timed, rng, _grace(topology) // 2)


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        inner = doc.setdefault(part, {})
        if not isinstance(inner, dict):
            return
        doc = inner
    doc.setdefault(path[-1], value)


def _key(topology: Topology, doc: dict[str, Any]) -> str | None:
    """The Kafka key: the source key field, else the join key (the table's rows are keyed
    so), else the first group key (same key, same partition, as state is kept per
    partition)."""
    joins = [s.join.on for s in topology.pipeline if isinstance(s, JoinStep)]
    keys = [topology.source.key, *joins, *(s.key for s in topology.aggregates())]
    for path in (k for k in keys if k):
        found: Any = doc
        for part in field_path(path):
            found = found.get(part) if isinstance(found, dict) else None
        if found is not None:
            return str(found)
    return None
