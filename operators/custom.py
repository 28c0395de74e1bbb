"""The `python` step: a user's function, imported by name, called per record.

Stateless: `fn(value) -> dict | list[dict] | None` (the new value, several, or none).
Stateful: `fn(value, state) -> (new_state, output)` with `state` the key's JSON value (None
at first); `new_state` None deletes it, `output` None emits nothing.

Everything that can be checked without a record is checked when the topology loads (import,
attribute, callable, signature): `tidemark validate` reports it with its path. What the
function does with a record (an exception, a result that is not JSON) is that record's fault:
it goes to dead letters and the stream goes on, as with a failing expression.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tidemark.config.model import PythonCall, field_path
from tidemark.config.state import State
from tidemark.operators.events import INT64, Event, RecordError, StepError, key_string

MAX_DEPTH = 64  # nesting of a result; MongoDB stores 100 levels, orjson writes 255
MAX_STATE_CHARS = 4_000_000  # a state far below MongoDB's 16 MB document limit
_P = inspect.Parameter


def load_callable(spec: str, arguments: int, usage: str) -> Callable[..., Any]:
    """`package.module:function` imported from `sys.path`, checked to take `arguments`
    positional arguments; `StepError` saying what is wrong otherwise."""
    module_name, _, name = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepError(f"cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:  # the user's module failed as it loaded: a topology error
        raise StepError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise StepError(f"module {module_name!r} has no attribute {name!r}") from exc
    if not callable(target):
        raise StepError(f"{spec!r} is not callable")
    if inspect.iscoroutinefunction(target) or inspect.isgeneratorfunction(target):
        raise StepError(f"{spec!r} must be a plain function, {usage}, not async or a generator")
    _check_signature(target, spec, arguments, usage)
    fn: Callable[..., Any] = target
    return fn


def _check_signature(fn: Callable[..., Any], spec: str, arguments: int, usage: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some builtins have no signature to read; the first call will tell
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is _P.empty]
    spread = any(p.kind is _P.VAR_POSITIONAL for p in params)
    keyword_only = [p for p in params if p.kind is _P.KEYWORD_ONLY and p.default is _P.empty]
    if len(required) > arguments or (len(positional) < arguments and not spread) or keyword_only:
        bare = signature.replace(
            parameters=[p.replace(annotation=_P.empty) for p in params],
            return_annotation=inspect.Signature.empty,
        )
        raise StepError(f"{spec!r} must be called as {usage}, but its signature is {bare}")


def _bad_result(spec: str, problem: str) -> RecordError:
    return RecordError(f"{spec} returned {problem}", "python_result")


def json_size(value: Any, spec: str) -> int:
    """Check that `value` is JSON MongoDB and a sink can hold (string keys, 64-bit integers,
    finite floats, bounded nesting); its rough size in characters."""
    size, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:  # also what ends a structure that contains itself
            raise _bad_result(spec, f"a value nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            size += len(item) + 2
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise _bad_result(spec, f"an object key that is not a string: {k!r}")
                size += len(k) + 4
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            size += 2
            stack.extend((v, depth + 1) for v in item)
        elif item is None or isinstance(item, bool):
            size += 5
        elif isinstance(item, int):
            if not INT64[0] <= item <= INT64[1]:
                raise _bad_result(spec, "an integer beyond 64 bits")
            size += 8
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _bad_result(spec, f"{item}, which JSON cannot hold")
            size += 8
        else:
            raise _bad_result(spec, f"a {type(item).__name__}, which is not JSON")
    return size


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value, so user code may change what it is given in place
    without touching the stored state or a sibling output of a `flat_map`."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


class _Custom:
    """What both kinds of python step share: the function and calling it safely."""

    def __init__(self, spec: PythonCall, arguments: int, usage: str) -> None:
        self.spec = spec.callable
        self._fn = load_callable(spec.callable, arguments, usage)

    def _call(self, *args: Any) -> Any:
        try:
            copies = [json_copy(a) for a in args]
        except RecursionError as exc:
            raise RecordError("the record is nested too deeply to copy", "too_deep") from exc
        try:
            return self._fn(*copies)
        except Exception as exc:  # user code failed on this record: its fault, a dead letter
            message = f"{self.spec} raised {type(exc).__name__}: {exc}"
            raise RecordError(message[:1000], "python_error") from exc

    def _object(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _bad_result(self.spec, f"{type(value).__name__} where a dict was expected")
        json_size(value, self.spec)
        return value


class PythonMap(_Custom):
    """`fn(value)`: a dict replaces the value, a list of dicts gives one output each (in
    order), None drops the record. Outputs keep the record's key, offset, time and topic."""

    stateful = False
    fans_out = True  # a list of outputs shares its record's offset (see `Pipeline`)

    def __init__(self, spec: PythonCall) -> None:
        super().__init__(spec, 1, "fn(value)")
        self.id = f"python({self.spec})"

    def apply(self, event: Event) -> Event | list[Event] | None:
        result = self._call(event.value)
        if result is None:
            return None
        if isinstance(result, list):
            return [replace(event, value=self._object(v)) for v in result]
        return replace(event, value=self._object(result))


class PythonStateful(_Custom):
    """`fn(value, state) -> (new_state, output)` per key, with the recovery rule of
    `KeyedAggregate`: an event at or below the offset stamped on its key was applied before a
    crash and is skipped; the new state is stamped with the event's offset. The output, if
    any, is keyed by the state key."""

    stateful = True

    def __init__(self, spec: PythonCall) -> None:
        super().__init__(spec, 2, "fn(value, state)")
        assert spec.id is not None and spec.key is not None  # the model insists
        self.id = spec.id
        self._key = field_path(spec.key)

    def key_of(self, event: Event) -> str:
        return key_string(event.value, self._key)

    def apply(self, event: Event, key: str, state: State) -> Event | None:
        current = state.get(key)
        if current is not None and current.offset >= event.offset:
            return None
        result = self._call(event.value, None if current is None else current.value)
        if not isinstance(result, tuple) or len(result) != 2:
            raise _bad_result(self.spec, f"{type(result).__name__}, not (new_state, output)")
        new_state, output = result
        if output is not None:
            output = self._object(output)
        if new_state is None:
            if current is not None and current.value is not None:
                state.delete(key, event.offset)
        elif json_size(new_state, self.spec) > MAX_STATE_CHARS:
            raise RecordError(
                f"{self.spec} returned a state of over {MAX_STATE_CHARS} characters",
                "state_too_large",
            )
        else:
            state.put(key, new_state, event.offset)
        return None if output is None else replace(event, key=key, value=output)
