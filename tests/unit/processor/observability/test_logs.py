"""Log lines: JSON for machines, readable on a terminal, bound context, no secret."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import structlog

from tidemark.processor.observability import logs


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TIDEMARK_LOG_LEVEL", raising=False)
    monkeypatch.delenv("TIDEMARK_LOG_FORMAT", raising=False)
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()  # the captured stream is closed after the test


def test_json_lines_with_the_worker_bound_and_secrets_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "auto")  # not a terminal: JSON
    logs.bind_worker("clicks", "host:1")
    structlog.get_logger("t").info(
        "partition_assigned", partition=2, epoch=7, uri="mongodb://u:hunter2@db/"
    )
    err = capsys.readouterr().err
    line = orjson.loads(err.splitlines()[-1])
    assert line["event"] == "partition_assigned"
    assert (line["topology"], line["worker"], line["partition"], line["epoch"]) == (
        "clicks",
        "host:1",
        2,
        7,
    )
    assert "hunter2" not in err


def test_console_rendering_and_the_level_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEMARK_LOG_LEVEL", "warning")
    logs.configure("INFO", "console")
    log = structlog.get_logger("t")
    log.info("not_shown")
    log.warning("shown", partition=1)
    text = capsys.readouterr().err
    assert "not_shown" not in text and "shown" in text
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text.splitlines()[-1])  # readable, not JSON
