"""The online feature store's read side: `FeatureClient`, its async twin, the HTTP app.

The write side is the `features` sink of a topology (`materialize.py`), run by the commit
protocol; groups, versions, schema and lineage are in MongoDB (`registry.py`).
"""

from tidemark.features.client import AsyncFeatureClient, FeatureClient
from tidemark.features.reading import CacheStats, FeatureRequestError, FeatureVector

__all__ = [
    "AsyncFeatureClient",
    "CacheStats",
    "FeatureClient",
    "FeatureRequestError",
    "FeatureVector",
]
