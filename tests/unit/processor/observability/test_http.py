"""The probe endpoints: status codes follow the verdicts, metrics are Prometheus text."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tidemark.processor.observability import metrics
from tidemark.processor.observability.http import Endpoints, Verdict


@pytest.fixture
def verdicts() -> dict[str, Verdict]:
    return {"live": Verdict(True), "ready": Verdict(False, {"waiting_for": "mongo"})}


@pytest.fixture
def endpoints(verdicts: dict[str, Verdict]) -> Iterator[Endpoints]:
    served = Endpoints(0, lambda: verdicts["live"], lambda: verdicts["ready"], host="127.0.0.1")
    yield served
    served.close()


def get(endpoints: Endpoints, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoints.port}{path}", timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_probes_answer_what_the_verdicts_say(
    endpoints: Endpoints, verdicts: dict[str, Verdict]
) -> None:
    assert get(endpoints, "/healthz") == (200, b'{"ok":true}')
    status, body = get(endpoints, "/readyz")
    assert status == 503 and orjson.loads(body) == {"ok": False, "waiting_for": "mongo"}
    verdicts["ready"] = Verdict(True)
    verdicts["live"] = Verdict(False, {"loop_idle_s": 99})
    assert get(endpoints, "/readyz")[0] == 200
    assert get(endpoints, "/healthz")[0] == 503


def test_metrics_are_prometheus_text_and_other_paths_are_404(endpoints: Endpoints) -> None:
    status, body = get(endpoints, "/metrics")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert status == 200 and "tidemark_records_in" in names
    assert {f"{n}_total" for n in names if n.startswith("tidemark_")} & metrics.exposed_names()
    assert get(endpoints, "/")[0] == 404
