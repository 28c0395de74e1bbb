"""librdkafka's own log lines and error events, through our logger, one per kind per window.

A broker restart makes librdkafka report every failed connect, request timeout and
coordinator change, hundreds of lines in seconds; the operator needs one line saying the
broker is unreachable, and a count of what was held back.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from confluent_kafka import KafkaError

from tidemark.config.throttle import Throttle

log = structlog.get_logger("tidemark.kafka.client")
_throttle = Throttle()


class _Forward(logging.Handler):
    """Receives librdkafka's lines (`logger.log(level, "%s [%s] %s", facility, client, text)`)."""

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        facility = str(args[0]) if args else "?"
        held = _throttle.allow(f"log:{facility}")
        if held is None:
            return
        level = "warning" if record.levelno >= logging.WARNING else "info"
        text = str(args[2]) if len(args) > 2 else record.getMessage()
        getattr(log, level)("kafka_client_log", facility=facility, text=text, held_back=held)


def _on_error(error: KafkaError) -> None:
    held = _throttle.allow(f"error:{error.name()}")
    if held is not None:
        log.warning("kafka_client_error", code=error.name(), text=error.str(), held_back=held)


def _logger() -> logging.Logger:
    logger = logging.getLogger("tidemark.librdkafka")
    if not logger.handlers:
        logger.addHandler(_Forward())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def routed() -> dict[str, Any]:
    """Client settings that send librdkafka's logs and errors here."""
    return {"logger": _logger(), "error_cb": _on_error}
