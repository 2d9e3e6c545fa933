"""Quantize an ONNX model: none / fp16 / dynamic / int8 (calibrated QDQ), one small API.

    result = quantize_onnx(model_bytes, QuantizationConfig(mode="int8"), calibration,
                           exclude_nodes=("head/Gemm",))

`calibration` maps each input name to a float32 array of samples (batch axis first).
int8 is delegated to edgepack.converters.int8 (recipe per engine and CPU family, graph
preparation, onnxruntime's static quantizer in QDQ format, optional accuracy-aware mixed
precision, speed check). `exclude_nodes` keeps named nodes in float.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError, EngineNotInstalledError
from edgepack.runtime.specs import QuantParams, TensorSpec

from .config import QuantizationConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizedOnnx:
    """The quantized model, plus explicit I/O specs when the I/O became int8."""

    model_bytes: bytes
    record: Mapping[str, Any] | None
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None


def quantize_onnx(model: bytes, config: QuantizationConfig,
                  calibration: Mapping[str, np.ndarray] | None = None, *,
                  exclude_nodes: Sequence[str] = ()) -> QuantizedOnnx:
    """Apply `config.mode` to the serialized ONNX `model`.

    Raises ConversionError when int8 has no calibration data or the quantizer fails, and
    EngineNotInstalledError when onnxruntime is missing.
    """
    if config.mode == "none":
        return QuantizedOnnx(model, None)
    try:
        import onnx
        from onnxruntime import quantization as ortq
    except ImportError as e:
        raise EngineNotInstalledError(
            f"ONNX quantization needs onnx and onnxruntime ({e}); "
            "pip install 'edgepack[convert]'") from e
    if config.mode == "int8":
        return _quantize_int8(model, config, calibration, exclude_nodes)
    proto = onnx.load_from_string(model)
    if config.mode == "fp16":
        from .onnx_fp16 import convert_weights_to_fp16
        return QuantizedOnnx(convert_weights_to_fp16(proto).SerializeToString(),
                             config.to_record())
    with tempfile.TemporaryDirectory(prefix="edgepack-q-") as tmp:
        src, pre, out = Path(tmp, "in.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "out.onnx")
        onnx.save(proto, str(src))
        _preprocess(ortq, src, pre)
        reduce_range = dynamic_reduce_range(config)
        _quantize_dynamic(ortq, pre, out, config, exclude_nodes, reduce_range)
        record = dict(config.to_record() or {}, reduce_range=reduce_range)
        return QuantizedOnnx(out.read_bytes(), record)


def dynamic_reduce_range(config: QuantizationConfig) -> bool:
    """7-bit weights for dynamic mode: as asked, else as the int8 recipe of the device (or
    of this machine) decides: 8-bit on ARM and VNNI, 7-bit on x86 kernels that saturate,
    including when this x86 host validates an ARM bundle (recipes.for_validation_host)."""
    if config.reduce_range is not None:
        return config.reduce_range
    from .int8.recipes import choose_recipe
    return choose_recipe("onnxruntime", config.device).reduce_range


def _quantize_int8(model: bytes, config: QuantizationConfig,
                   calibration: Mapping[str, np.ndarray] | None,
                   exclude_nodes: Sequence[str]) -> QuantizedOnnx:
    """int8 through edgepack.converters.int8: the recipe of the device (or this host),
    graph preparation, calibration, optional accuracy-aware mixed precision and the
    on-the-spot "faster than fp32 here?" check, all recorded in the manifest."""
    import onnx

    from .int8 import quantize_int8
    if not calibration:
        raise ConversionError(
            "int8 quantization needs calibration data (a .npy/.npz file, an image "
            "folder or an iterable of samples); pass --calibration-data")
    count = min(config.calibration.samples, *(len(a) for a in calibration.values()))
    samples = {n: np.asarray(a)[:count] for n, a in calibration.items()}
    result = quantize_int8(model, samples, config.int8_options("onnxruntime", exclude_nodes))
    record = config.to_record(calibration_samples=result.record["calibration"]["samples"])
    record.update(per_channel=result.recipe.per_channel, reduce_range=result.recipe.reduce_range)
    record.update((k, v) for k, v in result.record.items() if k != "calibration")
    quantized = onnx.load_from_string(result.model_bytes)
    if not config.int8_io:
        return QuantizedOnnx(compact_names(quantized).SerializeToString(), record)
    from .onnx_int8_io import make_int8_io
    proto, inputs, outputs = make_int8_io(quantized, samples)
    return QuantizedOnnx(compact_names(proto).SerializeToString(), record, inputs, outputs)


def compact_names(proto, longer_than: int = 16):
    """Rename long internal tensor names to short ones ("t12"); graph I/O and node names stay.

    The quantizer derives each Q/DQ tensor name from the tensor it wraps
    ("sequential_1/conv2d_1/convolution/ReadVariableOp:0_DequantizeLinear_Output"), and
    every name is stored at its producer and each consumer: on a 70k-parameter Keras CNN
    that was 10% of the int8 file. Node names are kept for debugging and node exclusion.
    """
    graph = proto.graph
    if any(a.g.node or a.graphs for node in graph.node for a in node.attribute):
        return proto  # subgraphs (If/Loop) may reference outer names: leave them alone
    keep = {v.name for v in (*graph.input, *graph.output)}
    names: list[str] = []
    seen = set(keep)
    for item in [*graph.initializer, *graph.value_info]:
        if item.name not in seen:
            seen.add(item.name)
            names.append(item.name)
    for node in graph.node:
        for name in (*node.input, *node.output):
            if name and name not in seen:
                seen.add(name)
                names.append(name)
    mapping = {n: f"t{i}" for i, n in enumerate(names) if len(n) > longer_than}
    if set(mapping.values()) & seen:
        return proto  # a short name is already taken: keep everything as it is
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for item in (*graph.initializer, *graph.value_info):
        item.name = mapping.get(item.name, item.name)
    return proto


def _preprocess(ortq, src: Path, dst: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .int8.graph_prep import in_directory
    try:
        with in_directory(dst.parent):  # its failure leaves files in the working directory
            quant_pre_process(str(src), str(dst))
    except Exception as e:  # symbolic inference fails on some exporters' graphs; it is optional
        log.warning("onnxruntime quantization pre-processing failed (%s); "
                    "retrying without symbolic shape inference", str(e).splitlines()[0])
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        except Exception as e2:
            log.warning("pre-processing failed again (%s); quantizing the model as exported",
                        str(e2).splitlines()[0])
            dst.write_bytes(src.read_bytes())


def _quantize_dynamic(ortq, src: Path, dst: Path, config: QuantizationConfig,
                      exclude: Sequence[str], reduce_range: bool) -> None:
    # Conv is left out: onnxruntime's CPU provider has no ConvInteger kernel for int8
    # weights, and a uint8 variant loses more accuracy than it saves on conv nets, so
    # "dynamic" means what it means elsewhere: int8 weights for the matrix multiplies.
    import onnx

    from .int8 import dynamic_refusal
    ops = [n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node]
    dynamic_refusal(ops, asked_explicitly=True)  # warns on conv-heavy models
    try:
        ortq.quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm", "Attention", "LSTM",
                                                      "GRU", "EmbedLayerNormalization"],
            per_channel=config.per_channel, reduce_range=reduce_range,
            weight_type=ortq.QuantType.QInt8, nodes_to_exclude=list(exclude) or None)
    except Exception as e:
        raise ConversionError(f"onnxruntime dynamic quantization failed: {e}") from e


def quant_params_of(scale: np.ndarray, zero_point: np.ndarray) -> QuantParams:
    """QuantParams from a QuantizeLinear/DequantizeLinear scale and zero point."""
    return QuantParams(tuple(float(s) for s in np.atleast_1d(scale)),
                       tuple(int(z) for z in np.atleast_1d(zero_point)))
