"""Structured logs: one JSON object per line on stderr."""

from __future__ import annotations

import logging
import os
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from tidemark.config import secrets


def _scrub(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """No credential reaches a log line, whatever a client or an error message put in it."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = secrets.scrub(value)
    return event


def configure(default_level: str = "INFO") -> None:
    """Set up structlog; `TIDEMARK_LOG_LEVEL` overrides the level."""
    level = logging.getLevelName(os.environ.get("TIDEMARK_LOG_LEVEL", default_level).upper())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            level if isinstance(level, int) else 20
        ),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
    )
