"""The root of every error Tidemark raises on purpose, and whether retrying can help.

`retriable` is read by the retry helper (`tidemark.state.retry`): a retriable error is
retried with backoff like a dropped connection; any other one propagates at once.
"""

from __future__ import annotations


class TidemarkError(Exception):
    """Base of Tidemark's own errors; `retriable` says whether the same call may succeed later."""

    retriable: bool = False
