"""The HTTP face of the feature store, behind `tidemark serve` (FastAPI under uvicorn).

    GET  /features/{group}/{entity}?features=a,b&version=2&as_of=2026-11-29T10:00:00Z
    POST /features/{group}/batch    {"entities": [...], "features": [...], "version": 2}
    GET  /groups   GET /healthz   GET /metrics   GET /openapi.json (and /docs)

Errors are JSON `{"error": ...}`: 404 for an unknown group or version, 400 for an unknown
feature or a bad `as_of`, 422 for a malformed body or parameter, 503 when MongoDB does not
answer. FastAPI is chosen over bare Starlette for the OpenAPI document and the request
validation it derives from the same pydantic models.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
import structlog
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import make_asgi_app
from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import PyMongoError

from tidemark.features.client import AsyncFeatureClient
from tidemark.features.monitoring import Monitor
from tidemark.features.reading import MAX_ENTITIES, FeatureRequestError, FeatureVector

log = structlog.get_logger("tidemark.serve")
# Epoch ms up to the end of year 9999 (what a datetime holds), or ISO 8601.
AsOf = Annotated[int, Field(ge=0, le=253_402_300_799_999)] | dt.datetime


class BatchRequest(BaseModel):
    """Features of up to 1,000 entities of one group."""

    model_config = ConfigDict(extra="forbid")

    entities: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, max_length=MAX_ENTITIES
    )
    features: list[str] | None = Field(None, min_length=1, description="absent: all")
    version: int | None = Field(None, ge=1, description="absent: the latest")
    as_of: AsOf | None = Field(None, description="epoch ms or ISO 8601; needs `history`")


class Vector(BaseModel):
    """One entity's features; `status` is ok, missing (never written) or expired (TTL)."""

    entity: str
    version: int
    status: str
    event_time: int | None = Field(description="epoch ms the values reflect")
    staleness_seconds: float | None = Field(description="from that event time to the read")
    features: dict[str, Any]


class Answer(BaseModel):
    group: str
    version: int
    entities: list[Vector]


def create_app(client: AsyncFeatureClient, monitor_every: float = 60.0) -> FastAPI:
    """The app over `client`; every `monitor_every` seconds it refreshes the freshness and
    drift gauges of every registered group."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(Monitor(client).forever(monitor_every))
        try:
            yield
        finally:
            task.cancel()
            await client.close()

    app = FastAPI(title="Tidemark feature store", lifespan=lifespan)
    app.mount("/metrics", make_asgi_app())

    @app.exception_handler(FeatureRequestError)
    async def _refused(_: Request, exc: FeatureRequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(PyMongoError)
    async def _unavailable(_: Request, exc: PyMongoError) -> JSONResponse:
        log.warning("mongo_unavailable", error=type(exc).__name__)
        return JSONResponse({"error": "MongoDB did not answer; retry"}, status_code=503)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        await client.ping()
        return JSONResponse({"status": "ok"})

    @app.get("/groups")
    async def groups() -> list[dict[str, Any]]:
        return [info.describe() for info in await client.groups()]

    @app.get("/features/{group}/{entity}", response_model=Answer)
    async def one(
        group: str,
        entity: str,
        features: Annotated[str | None, Query(description="comma-separated; absent: all")] = None,
        version: Annotated[int | None, Query(ge=1)] = None,
        as_of: Annotated[AsOf | None, Query(description="epoch ms or ISO 8601")] = None,
    ) -> Response:
        names = [f for f in features.split(",") if f] if features is not None else None
        return _answer(group, await client.get(group, entity, names, version, as_of))

    @app.post("/features/{group}/batch", response_model=Answer)
    async def batch(group: str, request: BatchRequest) -> Response:
        r = request
        return _answer(group, await client.get(group, r.entities, r.features, r.version, r.as_of))

    return app


def _answer(group: str, vectors: list[FeatureVector]) -> Response:
    # Serialized by orjson directly: the response model is for the OpenAPI document only.
    body = {
        "group": group,
        "version": vectors[0].version,
        "entities": [v.to_json() for v in vectors],
    }
    return Response(orjson.dumps(body), media_type="application/json")
