"""keras/tensorflow -> onnx with tf2onnx, then ONNX quantization.

`tf2onnx.convert.from_keras` breaks on Keras 3 Sequential models (KeyError on the internal
keras_tensor names), so the model goes through the same named-I/O SavedModel as the TFLite
path and tf2onnx converts its serving function, traced with an explicit input signature.
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
from .config import ConversionConfig
from .keras_source import export_saved_model
from .quantize_onnx import quantize_onnx

log = logging.getLogger(__name__)


def export_onnx(source: SourceModel, config: ConversionConfig) -> bytes:
    """The float32 ONNX bytes of a keras/SavedModel source."""
    import tensorflow as tf
    import tf2onnx

    with tempfile.TemporaryDirectory(prefix="edgepack-tf2onnx-") as tmp:
        saved = export_saved_model(source, Path(tmp, "saved_model"), config.dynamic_batch)
        loaded = tf.saved_model.load(str(saved))  # must outlive the trace: it owns the variables
        serving = loaded.signatures["serving_default"]
        specs = serving.structured_input_signature[1]
        signature = [specs[n] for n in source.input_names]
        for n, spec, example in zip(source.input_names, signature, source.example_inputs):
            if any(d is None for d in spec.shape[1:]):
                # tf2onnx accepts these, but quantization and devices want static sizes.
                signature[source.input_names.index(n)] = tf.TensorSpec(
                    [None, *example.shape[1:]], spec.dtype, name=n)
        names = source.input_names

        def forward(*args):
            return serving(**dict(zip(names, args)))

        function = tf.function(forward, input_signature=signature)
        try:
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature,
                                                     opset=config.opset)
        except Exception as e:
            raise conversion_error(e) from e
    _check_ops(proto)
    return shorten_names(proto).SerializeToString()


def _check_ops(proto) -> None:
    """tf2onnx logs unsupported TF ops and leaves them in the graph as unknown ONNX ops;
    catch that here instead of as an 'invalid graph' from the engine later."""
    import onnx
    unknown = sorted({n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx")
                      and not onnx.defs.has(n.op_type)})
    if unknown:
        raise ConversionError(
            f"tf2onnx does not support op(s) {', '.join(unknown)}; replace them, or try "
            "--target tflite (TFLiteConverter)")


def shorten_names(proto):
    """Drop tf2onnx's 'StatefulPartitionedCall/...' prefixes from internal names.

    They repeat in every node and tensor name (and again in each Q/DQ name after int8
    quantization): on a small CNN they were half of the int8 file. Graph I/O names stay.
    """
    graph = proto.graph
    keep = {v.name for v in (*graph.input, *graph.output)}
    names = {n for node in graph.node for n in (*node.input, *node.output) if n}
    names |= {i.name for i in graph.initializer} | {v.name for v in graph.value_info}
    mapping = {n: re.sub(r"^(StatefulPartitionedCall(_\d+)?/)+", "", n)
               for n in names - keep}
    if len(set(mapping.values()) | keep) != len(mapping) + len(keep):
        return proto  # a collision: keep the long, unique names
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        node.name = re.sub(r"^(StatefulPartitionedCall(_\d+)?/)+", "", node.name)
    for item in (*graph.initializer, *graph.value_info):
        item.name = mapping.get(item.name, item.name)
    return proto


def conversion_error(e: Exception) -> ConversionError:
    text = str(e)
    match = re.search(r"[Uu]nsupported ops?:?\s*(.*)", text)
    if match:
        ops = sorted(set(re.findall(r"'(\w+)'", match.group(1)))) or [match.group(1)[:80]]
        return ConversionError(
            f"tf2onnx does not support op(s) {', '.join(ops)}; replace them, or try "
            "--target tflite (TFLiteConverter)")
    return ConversionError(f"tf2onnx failed: {error_line(e)}")


def error_line(e: Exception) -> str:
    """The informative line of a framework error (TF prefixes them with 'in user code:')."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"\w*(Error|Exception)\b", line)]
    return (named or lines[-1:] or [type(e).__name__])[-1][:300]


def convert(source: SourceModel, config: ConversionConfig,
            calibration: Mapping[str, np.ndarray] | None) -> ConvertedModel:
    """Registry entry point for keras -> onnx."""
    import onnx
    model_bytes = export_onnx(source, config)
    quantized = quantize_onnx(model_bytes, config.quantization, calibration)
    proto = onnx.load_from_string(quantized.model_bytes)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    # tf2onnx names outputs after the signature keys, so the source order carries over.
    out_names = [o.name for o in proto.graph.output]
    order = tuple(list(source.output_names).index(n) if n in (source.output_names or ())
                  else i for i, n in enumerate(out_names))
    return ConvertedModel(quantized.model_bytes, "onnxruntime", "tf2onnx", opset=opset,
                          inputs=quantized.inputs, outputs=quantized.outputs,
                          output_order=order, quantization=quantized.record)
