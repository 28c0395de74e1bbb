"""`tidemark serve FILE` as a process on a free port, for tests that talk HTTP to it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.pipelines import ROOT
from tests.private_stack import free_port
from tests.support import wait_until


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def served(topology: Path, log: Path, *args: str) -> Iterator[httpx.Client]:
    """An HTTP client for `tidemark serve topology [args]`, once `/healthz` answers."""
    port = free_port()
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tidemark", "serve", str(topology), "--port", str(port), *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/healthz") or server.poll() is not None, 30, "serve")
        assert server.poll() is None, log.read_text(errors="replace")
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client
    finally:
        server.terminate()
        server.wait(10)
