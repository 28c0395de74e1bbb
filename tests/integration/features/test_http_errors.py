"""`tidemark serve` over the real MongoDB-protocol server: malformed requests of every
shape get a 4xx with a JSON error saying why, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.database import Database

from tests.integration.features.serving import served
from tests.support import Services
from tidemark.config import Topology, load_topology
from tidemark.features.registry import register

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[3] / "config/examples/user-features.yaml"


async def _register(topology: Topology, db: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(topology.mongo.uri)
    try:
        await register(client[db], topology)
    finally:
        await client.close()


@pytest.fixture
def http(services: Services, sync_db: Database[Any], tmp_path: Path) -> Iterator[httpx.Client]:
    env = {"MONGO_URI": services.mongo_uri}
    topology = load_topology(EXAMPLE, env=env)
    asyncio.run(_register(topology, sync_db.name))
    local = tmp_path / "features.yaml"
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["mongo"] = {"uri": services.mongo_uri, "database": sync_db.name}
    local.write_text(yaml.safe_dump(doc))
    with served(local, tmp_path / "serve.log") as client:
        yield client


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "says"),
    [
        ("get", "/features/nope/u1", None, 404, "unknown feature group 'nope'"),
        ("get", "/features/user_activity/u1?version=7", None, 404, "has no version 7"),
        ("get", "/features/user_activity/u1?version=0", None, 422, "version"),
        ("get", "/features/user_activity/u1?features=clicks_1h,nope", None, 400, "['nope']"),
        ("get", "/features/user_activity/u1?as_of=yesterday", None, 422, "as_of"),
        ("get", "/features/user_activity/u1?as_of=1" + "0" * 30, None, 422, "as_of"),
        ("post", "/features/user_activity/batch", {"entities": []}, 422, "entities"),
        ("post", "/features/user_activity/batch", {"entities": ["a"] * 1001}, 422, "entities"),
        ("post", "/features/user_activity/batch", {"entities": ["a"], "x": 1}, 422, "x"),
        ("post", "/features/user_activity/batch", [1, 2], 422, "body"),
        ("post", "/features/user_activity/batch", None, 422, "body"),
    ],
)
def test_each_kind_of_bad_request_gets_its_status_and_reason(
    http: httpx.Client, method: str, url: str, body: Any, status: int, says: str
) -> None:
    response = http.request(method, url, json=body)
    assert response.status_code == status, response.text
    assert says in response.text


def test_a_good_request_for_an_entity_never_written_answers_missing(http: httpx.Client) -> None:
    response = http.post("/features/user_activity/batch", json={"entities": ["nobody"]})
    assert response.status_code == 200, response.text
    [vector] = response.json()["entities"]
    assert vector["status"] == "missing" and vector["features"]["clicks_1h"] is None


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=8,
)
_body = st.fixed_dictionaries(
    {},
    optional={
        "entities": _json | st.lists(st.text(max_size=5), max_size=3),
        "features": _json,
        "version": _json,
        "as_of": _json | st.integers(),
    },
)
_segment = st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s and s not in (".", ".."))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    group=st.sampled_from(["user_activity", "nope"]) | _segment,
    entity=_segment,
    params=st.dictionaries(st.sampled_from(["features", "version", "as_of"]), st.text(max_size=25)),
    body=_body | _json,
)
def test_no_request_makes_the_server_fail(
    http: httpx.Client, group: str, entity: str, params: dict[str, str], body: Any
) -> None:
    group, entity = quote(group, safe=""), quote(entity, safe="")  # any text, as a client sends it
    one = http.get(f"/features/{group}/{entity}", params=params)
    batch = http.post(f"/features/{group}/batch", json=body)
    for response in (one, batch):
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert response.json().get("error") or response.json().get("detail")
