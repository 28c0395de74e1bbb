"""Topology files: the pydantic schema, `${VAR:-default}` interpolation and loading."""

from tidemark.config import secrets
from tidemark.config.loader import ConfigError, load_topology, parse_topology
from tidemark.config.model import Topology

__all__ = ["ConfigError", "Topology", "load_topology", "parse_topology", "secrets"]
