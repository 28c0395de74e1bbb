"""The worker's HTTP endpoints on `--metrics-port`: `/metrics`, `/healthz`, `/readyz`.

Served from a thread, not the event loop: a probe must get an answer when the loop is
stuck, and that answer must be "not alive". prometheus-client's WSGI app serves the
metrics; the standard library's threading WSGI server serves all three, so no web
framework is needed for three fixed paths.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: ok, and why (for the operator reading the response body)."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


Probe = Callable[[], Verdict]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line each."""


class Endpoints:
    """The three endpoints, served until `close()`."""

    def __init__(self, port: int, live: Probe, ready: Probe, host: str = "0.0.0.0") -> None:
        self._live, self._ready = live, ready
        self._metrics = make_wsgi_app()
        self._server = make_server(host, port, self._app, _Server, _Quiet)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tidemark-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _verdict(self._live(), start)
        if path == "/readyz":
            return _verdict(self._ready(), start)
        if path == "/metrics":
            body: Iterable[bytes] = self._metrics(environ, start)
            return body
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]


def _verdict(verdict: Verdict, start: StartResponse) -> list[bytes]:
    body = orjson.dumps({"ok": verdict.ok, **verdict.detail})
    status = "200 OK" if verdict.ok else "503 Service Unavailable"
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
