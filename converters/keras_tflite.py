"""keras/tensorflow -> tflite with tf.lite.TFLiteConverter, from a named-I/O SavedModel.

Modes map onto the converter as follows: fp16 = float16 weights (float32 compute and I/O
on CPU), dynamic = int8 weights with float activations, int8 = full-integer builtins with
a representative dataset (float or int8 I/O), made by edgepack.converters.int8.litert_int8
(the device's LiteRT recipe, optional accuracy-aware mixed precision, the speed check).
Only builtin ops are allowed: the select-TF ops ("flex") runtime is not available in the
slim LiteRT wheels devices run.
"""
from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from edgepack.runtime.errors import ConversionError

from .artifacts import ConvertedModel, SourceModel
from .config import ConversionConfig, QuantizationConfig
from .keras_source import export_saved_model

log = logging.getLogger(__name__)


def convert(source: SourceModel, config: ConversionConfig,
            calibration: Mapping[str, np.ndarray] | None) -> ConvertedModel:
    """Registry entry point for keras -> tflite."""
    quant = config.quantization
    if quant.needs_calibration and not calibration:
        raise ConversionError(
            "int8 quantization needs calibration data (a .npy/.npz file, an image folder or "
            "an iterable of samples); pass --calibration-data")
    samples = None
    with tempfile.TemporaryDirectory(prefix="edgepack-tfl-") as tmp:
        saved = export_saved_model(source, Path(tmp, "saved_model"), config.dynamic_batch)
        if quant.mode == "int8":
            names = source.input_names
            samples = min(quant.calibration.samples, *(len(calibration[n]) for n in names))
            model_bytes, int8_record = _quantize_int8(
                saved, quant, {n: np.asarray(calibration[n])[:samples] for n in names})
        else:
            model_bytes, int8_record = _convert_float(saved, quant), {}
    if quant.mode == "dynamic":
        _warn_if_conv_heavy(model_bytes)
    input_map, output_order = signature_maps(model_bytes, source)
    notes = () if config.dynamic_batch else (f"fixed batch {source.example_inputs[0].shape[0]}",)
    record = quant.to_record(calibration_samples=samples)
    if record:
        record.pop("reduce_range", None)  # an onnxruntime x86 workaround; TFLite has no such knob
        record.update((k, v) for k, v in int8_record.items() if k != "calibration")
    return ConvertedModel(model_bytes, "litert", "tf.lite.TFLiteConverter",
                          input_map=input_map, output_order=output_order,
                          quantization=record,
                          notes=notes)


def _warn_if_conv_heavy(model_bytes: bytes) -> None:
    """Dynamic was asked for explicitly: keep it, but say when it is the wrong mode."""
    from edgepack.devices.tflite_reader import read_tflite

    from .int8 import dynamic_refusal
    ops = [op.opcode.name for op in read_tflite(model_bytes).operators]
    dynamic_refusal(ops, asked_explicitly=True, engine="litert")


def _convert_float(saved: Path, quant: QuantizationConfig) -> bytes:
    """none / fp16 / dynamic."""
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quant.mode in ("fp16", "dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant.mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quant.mode == "dynamic" and not quant.per_channel:
        # No public switch exists; this private flag is what the converter reads.
        converter._experimental_disable_per_channel = True
    try:
        return converter.convert()
    except Exception as e:
        raise conversion_error(e) from e


def _quantize_int8(saved: Path, quant: QuantizationConfig,
                   samples: Mapping[str, np.ndarray]) -> tuple[bytes, dict]:
    """int8 through edgepack.converters.int8: the LiteRT recipe of the device, optional
    accuracy-aware mixed precision and the speed check, as the ONNX path does."""
    from .int8 import quantize_litert_int8
    result = quantize_litert_int8(saved, samples, quant.int8_options("litert"))
    return result.model_bytes, result.record


def signature_maps(model_bytes: bytes, source: SourceModel
                   ) -> tuple[dict[str, str], tuple[int, ...]]:
    """Map source inputs to TFLite tensor names, and TFLite outputs to source output indices.

    The runtime names tensors by `tensor_names` (the signature's keys when there is one
    signature, else the raw TFLite names), and the converter may order outputs differently
    from the signature: the signature's name -> tensor index table is the reliable link.
    """
    from edgepack.runtime.engines.litert_engine import interpreter_class, tensor_names
    interp = interpreter_class()(model_content=model_bytes)
    runtime_names = tensor_names(interp)
    signature = interp._get_full_signature_list().get("serving_default")
    in_details, out_details = interp.get_input_details(), interp.get_output_details()
    if not signature:
        return ({n: runtime_names[d["index"]] for n, d in zip(source.input_names, in_details)},
                tuple(range(len(out_details))))
    by_index = {d["index"]: runtime_names[d["index"]] for d in in_details}
    input_map = {n: by_index[signature["inputs"][n]] for n in source.input_names
                 if n in signature["inputs"]}
    out_index = {idx: name for name, idx in signature["outputs"].items()}
    names = list(source.output_names or ())
    order = tuple(names.index(out_index[d["index"]]) if out_index.get(d["index"]) in names
                  else i for i, d in enumerate(out_details))
    return input_map, order


def conversion_error(e: Exception) -> ConversionError:
    """A TFLite converter failure, naming unsupported ops and the path that may work."""
    text = str(e)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    ops = ops or sorted(set(re.findall(r"\btf\.(\w+)", text))) if "not supported" in text else ops
    if ops:
        return ConversionError(
            f"TFLite builtins do not support op(s) {', '.join(ops)}; replace them, or try "
            "--target onnx (tf2onnx), which supports a different op set")
    first = next((line for line in text.splitlines() if line.strip()), type(e).__name__)
    return ConversionError(f"the TFLite converter failed: {first[:300]}")
