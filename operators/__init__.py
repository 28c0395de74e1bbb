"""The operator library: events, the `State` protocol and the operators a topology names."""

from tidemark.config.state import Stamped, State
from tidemark.operators.events import Event, RecordError
from tidemark.operators.memory import InMemoryState
from tidemark.operators.pipeline import Pipeline
from tidemark.operators.registry import build_pipeline

__all__ = [
    "Event",
    "InMemoryState",
    "Pipeline",
    "RecordError",
    "Stamped",
    "State",
    "build_pipeline",
]
