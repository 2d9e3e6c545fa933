"""Declarative pre/post-processing: one registry of pure numpy steps, plus app hooks.

A manifest step is data, `{"op": "normalize", "mean": [...], "std": [...]}`. Each op is
registered as a *builder*: it checks its parameters once, when the bundle is loaded, and
returns a function array -> array. So a typo in a manifest fails at load time with the
step's location, and the per-request path does no parsing. The converters run these same
functions for calibration and validation, so workstation and device preprocess identically.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import HookError, PipelineError
from ..specs import TensorSpec

Step = Callable[[Any], Any]
Builder = Callable[["Params", "Context"], Step]

_OPS: dict[str, Builder] = {}
_HOOKS: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class Context:
    """What a step may know besides its parameters: the tensor's spec and the labels."""

    spec: TensorSpec | None = None
    labels: Sequence[str] | None = None
    hooks: Mapping[str, Callable[..., Any]] = field(default_factory=dict)


def register_op(name: str) -> Callable[[Builder], Builder]:
    """Register a step builder under `name` (used by the built-in op modules)."""
    def decorate(builder: Builder) -> Builder:
        if name in _OPS:
            raise ValueError(f"op {name!r} is registered twice")
        _OPS[name] = builder
        return builder
    return decorate


def hook(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an application function as the hook `name`.

    A manifest refers to it as `{"op": "hook", "name": name, ...params}`; it is called as
    `fn(array, **params)` and returns the new array. Bundles never carry code: the
    application on the device supplies it.
    """
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError("a hook must be callable")
        _HOOKS[name] = fn
        return fn
    return decorate


def registered_hooks() -> dict[str, Callable[..., Any]]:
    return dict(_HOOKS)


def unregister_hook(name: str) -> None:
    _HOOKS.pop(name, None)


def known_ops() -> list[str]:
    return sorted(_OPS)


class Params:
    """Typed access to one step's parameters; every error names the step and the field."""

    def __init__(self, step: Mapping[str, Any], where: str):
        self._data = dict(step)
        self._used = {"op"}
        self.where = where

    def fail(self, message: str) -> PipelineError:
        return PipelineError(f"{self.where} ({self._data.get('op')}): {message}")

    def get(self, key: str, default: Any = None) -> Any:
        self._used.add(key)
        return self._data.get(key, default)

    def has(self, key: str) -> bool:
        return key in self._data

    def number(self, key: str, default: float | None = None) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise self.fail(f"'{key}' must be a finite number, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"'{key}' must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(f"'{key}' must be >= {minimum}, got {value}")
        return value

    def numbers(self, key: str, default: Any = None) -> np.ndarray:
        value = self.get(key, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise self.fail(f"'{key}' must be a number or a non-empty list of numbers")
        return np.asarray(value, dtype=np.float32)

    def size(self, key: str = "size") -> tuple[int, int]:
        value = self.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, list) or len(value) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise self.fail(f"'{key}' must be [height, width] with positive integers")
        return int(value[0]), int(value[1])

    def choice(self, key: str, options: Sequence[str], default: str | None = None) -> str:
        value = self.get(key, default)
        if value not in options:
            raise self.fail(f"'{key}' must be one of {list(options)}, got {value!r}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(f"'{key}' must be a non-empty string")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise self.fail(f"unknown parameter(s) {unknown}; check the spelling")


def compile_steps(steps: Sequence[Mapping[str, Any]], context: Context,
                  where: str = "steps") -> Callable[[Any], Any]:
    """Validate `steps` and return one function applying them in order."""
    functions: list[Step] = []
    for i, step in enumerate(steps):
        loc = f"{where}[{i}]"
        if not isinstance(step, Mapping) or not isinstance(step.get("op"), str):
            raise PipelineError(f"{loc}: a step must be an object with an 'op' name")
        name = step["op"]
        if name == "hook":
            functions.append(_build_hook(Params(step, loc), context))
            continue
        builder = _OPS.get(name)
        if builder is None:
            raise PipelineError(f"{loc}: unknown op {name!r}; known ops: {known_ops()} and 'hook'")
        params = Params(step, loc)
        fn = builder(params, context)
        params.finish()
        functions.append(_located(fn, loc, name))

    def pipeline(value: Any) -> Any:
        for fn in functions:
            value = fn(value)
        return value

    return pipeline


def apply_steps(steps: Sequence[Mapping[str, Any]], value: Any,
                context: Context | None = None) -> Any:
    """Compile and apply `steps` once (convenience for scripts and calibration)."""
    return compile_steps(steps, context or Context(hooks=_HOOKS))(value)


def _located(fn: Step, where: str, name: str) -> Step:
    def run(value: Any) -> Any:
        try:
            return fn(value)
        except PipelineError:
            raise
        except (ValueError, TypeError, IndexError, FloatingPointError) as e:
            shape = getattr(value, "shape", None)
            raise PipelineError(f"{where} ({name}) failed on input of shape {shape}: {e}") from e
    return run


def _build_hook(params: Params, context: Context) -> Step:
    name = params.string("name")
    fn = context.hooks.get(name) or _HOOKS.get(name)
    if fn is None:
        hooks = set(_HOOKS) | set(context.hooks)
        raise HookError(
            f"{params.where}: the bundle needs hook {name!r}, which this application has not "
            f"registered; register it with @edgepack.runtime.hook({name!r}) before loading "
            f"(registered: {sorted(hooks) or 'none'})")
    kwargs = {k: params.get(k) for k in list(params._data) if k not in ("op", "name")}

    def run(value: Any) -> Any:
        try:
            return fn(value, **kwargs)
        except Exception as e:  # application code: report which hook failed
            raise HookError(f"hook {name!r} failed: {type(e).__name__}: {e}") from e
    return run


# Built-in ops register themselves on import.
from . import image, post, tensor  # noqa: E402,F401
