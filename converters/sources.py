"""Turn what the user hands us (a live model, a file, `module:factory`) into a SourceModel.

Framework detection never imports a framework the user did not use: a live object is
recognised by the module its class comes from, a file by its suffix.
"""
from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError, EngineNotInstalledError, InputError

from .artifacts import SourceModel
from .extras import raise_if_missing_module

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt2", ".pt", ".pth", ".ts")


class MissingSourceError(ConversionError, InputError):
    """The source model file (or its weights) does not exist: an input error (exit 2),
    still a ConversionError for callers of the conversion API."""

    exit_code = InputError.exit_code
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_source(source: Any, *, example_inputs: Any = None, weights: str | Path | None = None,
                input_shapes: Sequence[Sequence[int]] | None = None) -> SourceModel:
    """Load `source` and check that the example inputs fit it.

    source: a torch.nn.Module / ExportedProgram / ScriptModule, a keras.Model, a path
        (.pt2, TorchScript .pt, .keras, .h5, SavedModel dir, .onnx, .tflite), or a
        "module:factory" string (factory() returns a model; `weights` is loaded into it).
    example_inputs: an array, a tuple of arrays (one per input), or None to derive them
        from `input_shapes` or from the model's own static input shapes.
    Raises ConversionError when the source cannot be read or the examples do not fit.
    """
    if isinstance(source, SourceModel):
        return source
    try:
        return _load(source, example_inputs, weights, input_shapes)
    except EngineNotInstalledError:
        raise
    except Exception as e:  # a framework the source needs is missing: name its extra
        raise_if_missing_module(e, "reading this source")
        raise


def _load(source: Any, example_inputs: Any, weights: str | Path | None,
          input_shapes: Sequence[Sequence[int]] | None) -> SourceModel:
    examples = _examples(example_inputs, input_shapes)
    if isinstance(source, (str, Path)):
        text = str(source)
        if ":" in text and not Path(text).exists() and not _looks_like_windows_path(text):
            return _load(_call_factory(text, weights), examples, None, None)
        return _load_path(Path(text), examples, weights)
    framework = detect_framework(source)
    if framework == "pytorch":
        from .torch_source import torch_source
        return torch_source(source, examples)
    if framework == "keras":
        from .keras_source import keras_source
        return keras_source(source, examples)
    raise ConversionError(
        f"cannot convert an object of type {type(source).__name__}; pass a torch.nn.Module, "
        "a torch.export.ExportedProgram, a keras.Model, or a path to a model file")


def detect_framework(obj: Any) -> str | None:
    """'pytorch' or 'keras' for a live model object, else None (no framework imported)."""
    for klass in type(obj).__mro__:
        root = klass.__module__.split(".")[0]
        if root == "torch" and "torch" in sys.modules:
            return "pytorch"
        if root in ("keras", "tf_keras") or (root == "tensorflow" and "keras" in klass.__module__):
            return "keras"
    return None


def _looks_like_windows_path(text: str) -> bool:
    return len(text) > 2 and text[1] == ":" and text[2] in "\\/"


def _call_factory(spec: str, weights: str | Path | None) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConversionError(f"{spec!r} is not 'module:factory'; e.g. mypkg.models:build")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise ConversionError(
            f"cannot import {spec!r}: {e}; check the module is on PYTHONPATH") from e
    model = factory()
    if weights is not None:
        _load_weights(model, Path(weights))
    return model


def _load_weights(model: Any, weights: Path) -> None:
    if not weights.exists():
        raise MissingSourceError(f"weights file {weights} does not exist")
    framework = detect_framework(model)
    try:
        if framework == "pytorch":
            # Resizes layers that structured pruning narrowed, then loads strictly; a plain
            # state_dict of the factory's own shapes loads unchanged.
            from .optimize.io import load_weights
            load_weights(model, weights)
        elif framework == "keras":
            model.load_weights(str(weights))
        else:
            raise ConversionError(
                f"the factory returned a {type(model).__name__}, not a torch or keras model")
    except ConversionError:
        raise
    except Exception as e:  # the frameworks raise many types for mismatched weights
        raise ConversionError(f"cannot load weights {weights} into the model: {e}") from e


def _load_path(path: Path, examples: tuple[np.ndarray, ...] | None,
               weights: str | Path | None) -> SourceModel:
    if not path.exists():
        raise MissingSourceError(f"source model {path} does not exist")
    suffix = path.suffix.lower()
    if path.is_dir():
        from .hf_source import is_hf_directory
        if is_hf_directory(path):
            raise ConversionError(
                f"{path} is a Hugging Face save_pretrained directory: convert it with "
                "edgepack.converters.hf_onnx.convert_transformer (what `edgepack convert "
                "DIR` and `edgepack convert-transformer DIR` run)")
        if not (path / "saved_model.pb").exists():
            raise ConversionError(
                f"{path} is a directory but not a SavedModel (no saved_model.pb)")
        from .keras_source import saved_model_source
        return saved_model_source(path, examples)
    if suffix in TORCH_SUFFIXES:
        from .torch_source import load_torch_file, torch_source
        return torch_source(load_torch_file(path), examples, origin=str(path))
    if suffix in KERAS_SUFFIXES:
        from .keras_source import keras_source, load_keras_file
        return keras_source(load_keras_file(path), examples, origin=str(path))
    if suffix in (".onnx", ".tflite"):
        return serialized_source(path.read_bytes(), suffix[1:], examples, origin=str(path))
    raise ConversionError(
        f"cannot tell the framework of {path.name}; use .pt2/.pt (PyTorch), .keras/.h5 or a "
        "SavedModel directory (Keras/TensorFlow), .onnx, .tflite, or 'module:factory'")


def serialized_source(data: bytes, kind: str, examples: tuple[np.ndarray, ...] | None,
                      origin: str | None = None) -> SourceModel:
    """An existing .onnx/.tflite model as a source, run through the runtime's engine."""
    from edgepack.runtime.engines import open_engine
    engine_name = "onnxruntime" if kind == "onnx" else "litert"
    engine = open_engine(engine_name, data)
    specs = engine.inputs()
    names = tuple(s.name for s in specs)
    if examples is None:
        examples = tuple(np.zeros([1 if d == -1 else d for d in s.shape], dtype=s.dtype)
                         for s in specs)
    _check_count(examples, names)
    out_names = tuple(s.name for s in engine.outputs())

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        results = engine.run({n: np.asarray(a) for n, a in zip(names, inputs)})
        return [np.asarray(results[n]) for n in out_names]

    version = _package_version("onnx" if kind == "onnx" else "ai-edge-litert")
    first = specs[0].shape[0] if specs and specs[0].shape else -1
    return SourceModel(kind, data, names, examples, tuple(None for _ in names), run, version,
                       out_names, origin, first if first > 0 else None)


def _package_version(package: str) -> str:
    """The installed version of `package` (provenance: the onnx package for an ONNX
    source, the LiteRT package that read a .tflite), "unknown" when not installed."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _examples(example_inputs: Any, input_shapes: Sequence[Sequence[int]] | None
              ) -> tuple[np.ndarray, ...] | None:
    if example_inputs is None:
        if not input_shapes:
            return None
        rng = np.random.default_rng(0)
        return tuple(rng.standard_normal([int(d) for d in shape]).astype(np.float32)
                     for shape in input_shapes)
    if isinstance(example_inputs, dict):
        raise ConversionError("pass example inputs as an array or a tuple of arrays, not a dict")
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(to_numpy(x) for x in items)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from an array, torch tensor or tf tensor, without importing either."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return array


def _check_count(examples: tuple[np.ndarray, ...], names: tuple[str, ...]) -> None:
    if len(examples) != len(names):
        raise ConversionError(
            f"the model takes {len(names)} input(s) ({', '.join(names)}) but "
            f"{len(examples)} example input(s) were given")


def check_example_fits(run, examples: tuple[np.ndarray, ...], hint: str) -> list[np.ndarray]:
    """Run the source once on the examples; a failure becomes a shape error with `hint`."""
    try:
        return run(examples)
    except Exception as e:  # the framework's own error says which dimension is wrong
        shapes = ", ".join(str(list(x.shape)) for x in examples)
        raise ConversionError(
            f"the example input(s) of shape {shapes} do not fit the model: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; {hint}") from e
