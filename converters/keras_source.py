"""Keras / TensorFlow sources, and the SavedModel both Keras converters start from.

Both keras->tflite and keras->onnx go through one SavedModel written by Keras's own
`ExportArchive` with named inputs/outputs. Two shortcuts fail on Keras 3 and are avoided on
purpose: `tf2onnx.convert.from_keras` (KeyError on Sequential models) and a hand-made
`tf.Module` wrapper, whose Keras 3 variables are not tracked and convert to a TFLite model
that silently outputs NaN.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .artifacts import SourceModel
from .sources import check_example_fits

log = logging.getLogger(__name__)


def load_keras_file(path: Path) -> Any:
    import keras
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as e:
        raise ConversionError(f"cannot load Keras model {path}: {e}") from e


def keras_source(model: Any, examples: tuple[np.ndarray, ...] | None,
                 origin: str | None = None) -> SourceModel:
    """Wrap a keras.Model; examples default to its input shapes with batch 1."""
    import keras
    if not isinstance(model, keras.Model):
        raise ConversionError(f"expected a keras.Model, got {type(model).__name__}")
    try:
        symbolic = list(model.inputs)
    except (AttributeError, ValueError):
        symbolic = []
    names = tuple(_clean_name(t.name, i, len(symbolic)) for i, t in enumerate(symbolic))
    if examples is None:
        if not symbolic:
            raise ConversionError(
                "this Keras model has not been built; pass example_inputs or --input-shape")
        examples = tuple(_zeros_for(n, tuple(t.shape)) for n, t in zip(names, symbolic))
    if not names or len(names) != len(examples):
        names = tuple("input" if len(examples) == 1 else f"input_{i}"
                      for i in range(len(examples)))
    single = len(examples) == 1

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = model(inputs[0] if single else list(inputs), training=False)
        return [np.asarray(t, dtype=np.float32) for t in _flatten(out)]

    outputs = check_example_fits(
        run, examples, "pass example inputs shaped like one batch (batch axis first, NHWC)")
    out_names = tuple("output" if len(outputs) == 1 else f"output_{i}"
                      for i in range(len(outputs)))
    layouts = tuple("NHWC" if x.ndim == 4 else None for x in examples)
    return SourceModel("keras", model, names, examples, layouts, run, keras.__version__,
                       out_names, origin)


def saved_model_source(path: Path, examples: tuple[np.ndarray, ...] | None) -> SourceModel:
    """A TensorFlow SavedModel directory, run through its serving_default signature."""
    import tensorflow as tf
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except KeyError:
        raise ConversionError(f"SavedModel {path} has no 'serving_default' signature") from None
    except Exception as e:
        raise ConversionError(f"cannot load SavedModel {path}: {e}") from e
    specs = fn.structured_input_signature[1]
    names = tuple(sorted(specs))
    if examples is None:
        examples = tuple(_zeros_for(n, tuple(specs[n].shape)) for n in names)
    out_names = tuple(sorted(fn.structured_outputs))

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        result = fn(**{n: tf.constant(x) for n, x in zip(names, inputs)})
        return [np.asarray(result[k], dtype=np.float32) for k in out_names]

    check_example_fits(run, examples, "pass example inputs matching the serving signature")
    layouts = tuple("NHWC" if x.ndim == 4 else None for x in examples)
    return SourceModel("keras", str(path), names, examples, layouts, run, tf.__version__,
                       out_names, str(path))


def export_saved_model(source: SourceModel, directory: Path, dynamic_batch: bool) -> Path:
    """Write `source` as a SavedModel with named I/O; a SavedModel source is used as is.

    Non-batch dimensions are fixed to the example inputs' shapes (both targets want static
    spatial dims for quantization and on small devices); the batch axis stays dynamic when
    `dynamic_batch`.
    """
    if isinstance(source.model, str):
        return Path(source.model)
    import keras
    import tensorflow as tf
    signature = [tf.TensorSpec([None if dynamic_batch else x.shape[0], *x.shape[1:]],
                               tf.as_dtype(x.dtype), name=n)
                 for n, x in zip(source.input_names, source.example_inputs)]
    model, out_names, single = source.model, source.output_names, len(signature) == 1

    def serve(*args):
        out = _flatten(model(args[0] if single else list(args), training=False))
        return {name: tensor for name, tensor in zip(out_names, out)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=signature)
    try:
        archive.write_out(str(directory), verbose=False)
    except TypeError:  # older Keras 3 releases have no `verbose`
        archive.write_out(str(directory))
    return directory


def _flatten(out: Any) -> list[Any]:
    if isinstance(out, dict):
        return [t for key in out for t in _flatten(out[key])]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten(item)]
    return [out]


def _zeros_for(name: str, shape: tuple) -> np.ndarray:
    dims = list(shape)
    if any(d is None for d in dims[1:]):
        raise ConversionError(
            f"input {name!r} has dynamic dimensions {['?' if d is None else d for d in dims]}; "
            "the converters need static non-batch dimensions: pass example inputs or "
            "--input-shape with the size to use (e.g. 1,224,224,3)")
    return np.zeros([1 if d is None else int(d) for d in dims], dtype=np.float32)


def _clean_name(name: str, index: int, count: int) -> str:
    """Keras 3 auto-names inputs 'keras_tensor_12'; such names become input/input_i."""
    if not name or name.startswith("keras_tensor") or not re.fullmatch(r"[A-Za-z_][\w]*", name):
        return "input" if count == 1 else f"input_{index}"
    return name
