"""Errors of the state layer; each says whether retrying can help."""

from __future__ import annotations

from tidemark.config.errors import TidemarkError


class StateError(TidemarkError):
    """MongoDB refused a state or checkpoint write for a reason other than fencing."""


class Fenced(StateError):
    """A newer owner holds the partition: this writer must stop processing it."""

    def __init__(self, what: str, epoch: int) -> None:
        super().__init__(f"{what}: epoch {epoch} is no longer current; a newer owner took over")
        self.epoch = epoch
