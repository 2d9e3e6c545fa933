"""Inference engines behind one small protocol, picked by name.

Built-in engines are imported only when a bundle needs them, so `import edgepack.runtime`
never loads onnxruntime or LiteRT. Third-party engines register a class under the
entry-point group `edgepack.engines`; the group is read only when a name is not built in.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import EngineError, EngineNotInstalledError
from ..specs import TensorSpec

#: name -> (module, class, modules any one of which makes the engine usable, pip extra)
BUILTIN = {
    "onnxruntime": ("edgepack.runtime.engines.onnxruntime_engine", "OnnxRuntimeEngine",
                    ("onnxruntime",), "edgepack[onnx]"),
    "litert": ("edgepack.runtime.engines.litert_engine", "LiteRTEngine",
               ("ai_edge_litert", "tflite_runtime", "tensorflow"), "edgepack[litert]"),
}


@runtime_checkable
class Engine(Protocol):
    """What the runtime needs from an inference engine."""

    name: str

    def inputs(self) -> list[TensorSpec]: ...

    def outputs(self) -> list[TensorSpec]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    # Optional: bind(inputs, outputs) -> run(), running in place over caller-owned numpy
    # buffers (ONNX Runtime's IOBinding). Streams use it for their per-chunk hot path when
    # the engine has it; every engine works without it through run().


def is_available(name: str) -> bool:
    """True when the packages behind engine `name` are installed (checked without importing)."""
    if name in BUILTIN:
        return any(importlib.util.find_spec(m) is not None for m in BUILTIN[name][2])
    return name in _entry_points()


def open_engine(name: str, model: bytes, *, threads: int | None = None,
                spin_wait: bool | None = None) -> Engine:
    """Create engine `name` for the serialized `model`; raise a clear error if it cannot.

    An engine class is called as `cls(model, threads=...)`, plus `spin_wait=...` when the
    caller set it and the class takes it. spin_wait=False asks the engine's thread pool to
    sleep between runs instead of spinning (see `load`); an engine without such a setting
    is opened without it.
    """
    if name in BUILTIN:
        module, cls, _, extra = BUILTIN[name]
        if not is_available(name):
            raise EngineNotInstalledError(
                f"engine {name!r} is not installed on this machine; pip install '{extra}'")
        factory = getattr(importlib.import_module(module), cls)
    else:
        points = _entry_points()
        if name not in points:
            raise EngineNotInstalledError(
                f"unknown engine {name!r}; built in: {sorted(BUILTIN)}, registered: "
                f"{sorted(points) or 'none'}")
        factory = points[name].load()
    settings: dict = {"threads": threads}
    if spin_wait is not None and _accepts(factory, "spin_wait"):
        settings["spin_wait"] = spin_wait
    try:
        return factory(model, **settings)
    except EngineError:
        raise
    except Exception as e:  # engines raise their own types; the caller gets ours
        raise EngineError(f"engine {name!r} could not load the model: {e}") from e


def _accepts(factory, keyword: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some C-implemented callables have no signature
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in parameters)


def _entry_points() -> dict:
    from importlib.metadata import entry_points
    return {ep.name: ep for ep in entry_points(group="edgepack.engines")
            if ep.name not in BUILTIN}
