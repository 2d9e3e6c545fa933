"""Declarative pre/post-processing: one registry of pure numpy steps, plus app hooks.

A manifest step is data, `{"op": "normalize", "mean": [...], "std": [...]}`. Each op is
registered as a *builder*: it checks its parameters once, when the bundle is loaded, and
returns a function array -> array. So a typo in a manifest fails at load time with the
step's location, and the per-request path does no parsing. The converters run these same
functions for calibration and validation, so workstation and device preprocess identically.

Three kinds of steps (DESIGN §7):
- per-tensor steps (`register_op`): `preprocess[input]` and `postprocess[output]`, array ->
  array. A step that needs the call's `Trace` (geometric steps record their transform there)
  marks its function with `@traced`; it is then called as `fn(value, trace)`.
- `encode` steps (`register_encode`): the raw input (text, a clip...) -> a dict of tensors
  by input name, before per-input preprocessing (e.g. a tokenizer).
- `decode` steps (`register_decode`): see all postprocessed outputs at once, as a dict, and
  return a dict (e.g. candidates -> NMS -> {"detections": [...]}), after `postprocess`.
Encode and decode functions are always called as `fn(value, trace)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import HookError, PipelineError
from ..specs import TensorSpec
from .trace import Geometry, Trace

Step = Callable[[Any], Any]
Builder = Callable[["Params", "Context"], Step]

#: Largest image side a step may produce (a 32768x32768 RGB float image is 12 GiB already).
MAX_SIDE = 1 << 15
FLOAT32_MAX = float(np.finfo(np.float32).max)

_OPS: dict[str, Builder] = {}
_ENCODERS: dict[str, Builder] = {}
_DECODERS: dict[str, Builder] = {}
_HOOKS: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class Context:
    """What a step may know besides its parameters.

    `spec` is the tensor a per-tensor step works on (None for encode/decode steps);
    `inputs`/`outputs` are all of the model's specs; `assets` maps the manifest's asset
    names to the members' bytes (tokenizer, anchors, example inputs).
    """

    spec: TensorSpec | None = None
    labels: Sequence[str] | None = None
    hooks: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    assets: Mapping[str, bytes] = field(default_factory=dict)
    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()

    def asset(self, name: str, where: str) -> bytes:
        """The bytes of asset `name`, or a PipelineError naming the step that needs it."""
        if name not in self.assets:
            raise PipelineError(
                f"{where}: asset {name!r} is not in this bundle (assets: "
                f"{sorted(self.assets) or 'none'}); pack it with the bundle")
        return self.assets[name]


def _registrar(table: dict[str, Builder], kind: str) -> Callable[[str], Callable[[Builder], Builder]]:
    def register(name: str) -> Callable[[Builder], Builder]:
        def decorate(builder: Builder) -> Builder:
            if name in table:
                raise ValueError(f"{kind} {name!r} is registered twice")
            table[name] = builder
            return builder
        return decorate
    return register


register_op = _registrar(_OPS, "op")
register_op.__doc__ = "Register a per-tensor step builder under `name`."
register_encode = _registrar(_ENCODERS, "encode op")
register_encode.__doc__ = "Register an encode step builder: raw input -> dict of tensors."
register_decode = _registrar(_DECODERS, "decode op")
register_decode.__doc__ = "Register a decode step builder: dict of outputs -> dict of results."


def traced(fn: Callable[[Any, Trace], Any]) -> Callable[[Any, Trace], Any]:
    """Mark a per-tensor step function that takes the call's Trace as second argument."""
    fn.wants_trace = True  # type: ignore[attr-defined]
    return fn


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


def known_ops(kind: str = "op") -> list[str]:
    return sorted({"op": _OPS, "encode": _ENCODERS, "decode": _DECODERS}[kind])


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
        # Steps compute in float32: a value beyond its range would silently become inf.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not abs(value) <= FLOAT32_MAX:
            raise self.fail(f"'{key}' must be a finite number within float32's range, "
                            f"got {value!r}")
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
                isinstance(v, (int, float)) and not isinstance(v, bool)
                and abs(v) <= FLOAT32_MAX for v in value):
            raise self.fail(f"'{key}' must be a finite number or a non-empty list of finite "
                            "numbers within float32's range")
        return np.asarray(value, dtype=np.float32)

    def size(self, key: str = "size") -> tuple[int, int]:
        value = self.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, list) or len(value) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE
                for v in value):
            raise self.fail(f"'{key}' must be [height, width] with integers in 1..{MAX_SIDE}")
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
                  where: str = "steps", kind: str = "op") -> Callable[..., Any]:
    """Validate `steps` and return one function `pipeline(value, trace=None)`.

    `kind` selects the registry: "op" (per-tensor steps), "encode" or "decode".
    """
    table = {"op": _OPS, "encode": _ENCODERS, "decode": _DECODERS}[kind]
    functions: list[tuple[Callable[..., Any], bool]] = []
    for i, step in enumerate(steps):
        loc = f"{where}[{i}]"
        if not isinstance(step, Mapping) or not isinstance(step.get("op"), str):
            raise PipelineError(f"{loc}: a step must be an object with an 'op' name")
        name = step["op"]
        if name == "hook":
            functions.append((_build_hook(Params(step, loc), context), False))
            continue
        builder = table.get(name)
        if builder is None:
            raise PipelineError(
                f"{loc}: unknown {'' if kind == 'op' else kind + ' '}op {name!r}; known: "
                f"{known_ops(kind)} and 'hook'")
        params = Params(step, loc)
        fn = builder(params, context)
        params.finish()
        wants_trace = kind != "op" or getattr(fn, "wants_trace", False)
        functions.append((_located(fn, loc, name, wants_trace), wants_trace))

    if not any(wants for _, wants in functions):
        plain = [fn for fn, _ in functions]

        def pipeline(value: Any, trace: Trace | None = None) -> Any:
            for fn in plain:
                value = fn(value)
            return value
        return pipeline

    def traced_pipeline(value: Any, trace: Trace | None = None) -> Any:
        if trace is None:  # scripts and calibration: a throw-away record
            trace = Trace()
        for fn, wants in functions:
            value = fn(value, trace) if wants else fn(value)
        return value
    return traced_pipeline


def apply_steps(steps: Sequence[Mapping[str, Any]], value: Any,
                context: Context | None = None) -> Any:
    """Compile and apply `steps` once (convenience for scripts and calibration)."""
    return compile_steps(steps, context or Context(hooks=_HOOKS))(value)


def _located(fn: Callable[..., Any], where: str, name: str,
             wants_trace: bool = False) -> Callable[..., Any]:
    def fail(value: Any, e: Exception) -> PipelineError:
        shape = getattr(value, "shape", None)
        what = f"input of shape {shape}" if shape is not None else type(value).__name__
        return PipelineError(f"{where} ({name}) failed on {what}: {e}")

    if wants_trace:
        def run_traced(value: Any, trace: Trace) -> Any:
            try:
                return fn(value, trace)
            except PipelineError:
                raise
            except (ValueError, TypeError, IndexError, KeyError, FloatingPointError) as e:
                raise fail(value, e) from e
        return run_traced

    def run(value: Any) -> Any:
        try:
            return fn(value)
        except PipelineError:
            raise
        except (ValueError, TypeError, IndexError, FloatingPointError) as e:
            raise fail(value, e) from e
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
from . import audio  # noqa: E402,F401  (audio steps, runtime/ops/audio/)
from . import vision  # noqa: E402,F401  (detection decoders and NMS, runtime/ops/vision/)
from ..text import steps as _text_steps  # noqa: E402,F401  (text steps, runtime/text/)
