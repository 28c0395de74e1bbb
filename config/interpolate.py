"""`${VAR}` and `${VAR:-default}` in string values, resolved from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class MissingVariable(ValueError):
    """A `${VAR}` without a default names a variable that is not set."""

    def __init__(self, path: str, name: str) -> None:
        super().__init__(f"environment variable {name} is not set and has no default")
        self.path = path


def interpolate(value: object, env: Mapping[str, str], path: str = "") -> object:
    """Replace references in every string inside `value` (dicts and lists walked)."""
    if isinstance(value, str):
        return _REF.sub(lambda m: _lookup(m, env, path), value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _lookup(match: re.Match[str], env: Mapping[str, str], path: str) -> str:
    name, default = match[1], match[2]
    if env.get(name):
        return env[name]
    if default is not None:
        return default
    raise MissingVariable(path, name)
