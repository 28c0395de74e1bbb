"""Structured logs on stderr: JSON lines for machines, a readable rendering on a terminal.

One line per event worth knowing (a partition assigned, a commit failing, an outage),
never one per record. Every string value passes `secrets.scrub`, so a password that a
client or an error message put into a line never reaches the output.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from tidemark.config import secrets

Format = Literal["auto", "json", "console"]


def _scrub(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = secrets.scrub(value)
    return event


def configure(default_level: str = "INFO", fmt: Format = "auto") -> None:
    """Set up structlog; `TIDEMARK_LOG_LEVEL` overrides the level, `TIDEMARK_LOG_FORMAT`
    the format."""
    name = os.environ.get("TIDEMARK_LOG_LEVEL", default_level).upper()
    level = logging.getLevelNamesMapping().get(name, logging.INFO)
    chosen = os.environ.get("TIDEMARK_LOG_FORMAT", fmt)
    console = chosen == "console" or (chosen == "auto" and sys.stderr.isatty())
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=True)
        if console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks as text before scrubbing: a password in one must not get through.
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def bind_worker(topology: str, worker: str) -> None:
    """Every later line of this process names the topology and the worker."""
    structlog.contextvars.bind_contextvars(topology=topology, worker=worker)
