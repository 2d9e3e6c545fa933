"""Inference engines behind one small protocol, picked by name.

Built-in engines are imported only when a bundle needs them, so `import edgepack.runtime`
never loads onnxruntime or LiteRT. Third-party engines register a class under the
entry-point group `edgepack.engines`; the group is read only when a name is not built in.
"""
from __future__ import annotations

import importlib
import importlib.util
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


def is_available(name: str) -> bool:
    """True when the packages behind engine `name` are installed (checked without importing)."""
    if name in BUILTIN:
        return any(importlib.util.find_spec(m) is not None for m in BUILTIN[name][2])
    return name in _entry_points()


def open_engine(name: str, model: bytes, *, threads: int | None = None) -> Engine:
    """Create engine `name` for the serialized `model`; raise a clear error if it cannot."""
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
    try:
        return factory(model, threads=threads)
    except EngineError:
        raise
    except Exception as e:  # engines raise their own types; the caller gets ours
        raise EngineError(f"engine {name!r} could not load the model: {e}") from e


def _entry_points() -> dict:
    from importlib.metadata import entry_points
    return {ep.name: ep for ep in entry_points(group="edgepack.engines")
            if ep.name not in BUILTIN}
