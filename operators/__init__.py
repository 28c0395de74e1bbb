"""The operator library: events, the `State` protocol and the operators a topology names."""

from config.state import Stamped, State
from operators.events import Event, RecordError
from operators.memory import InMemoryState
from operators.pipeline import Pipeline
from operators.registry import build_pipeline

__all__ = [
    "Event",
    "InMemoryState",
    "Pipeline",
    "RecordError",
    "Stamped",
    "State",
    "build_pipeline",
]
