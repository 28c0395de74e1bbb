"""Custom `python` steps for the tests (`python: tests.custom_steps:enrich`)."""

from __future__ import annotations

from typing import Any


def enrich(value: dict[str, Any]) -> dict[str, Any]:
    """One output: the value with its amount in cents."""
    return {**value, "cents": round(value["amount"] * 100)}


def explode(value: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Several outputs (one per unit of `n`), or none for `n == 0`."""
    if value["n"] == 0:
        return None
    return [{"user": value["user"], "i": i} for i in range(value["n"])]


def bad_result(value: dict[str, Any]) -> Any:
    """Returns something that is not JSON."""
    return {"when": {1, 2}} if value.get("set") else value


def running_total(value: dict[str, Any], state: Any) -> tuple[Any, Any]:
    """Stateful: the running total per key; a negative amount resets it (deletes the state)
    and emits nothing."""
    if value["amount"] < 0:
        return None, None
    total = (state or {"total": 0})["total"] + value["amount"]
    return {"total": total}, {"user": value["user"], "total": total}


def two_arguments(value: dict[str, Any], extra: Any) -> dict[str, Any]:
    """The wrong signature for a stateless step."""
    return value


not_a_function = 42
