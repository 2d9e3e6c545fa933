"""Quantize an ONNX model: none / fp16 / dynamic / int8 (calibrated QDQ), one small API.

    result = quantize_onnx(model_bytes, QuantizationConfig(mode="int8"), calibration,
                           exclude_nodes=("head/Gemm",))

`calibration` maps each input name to a float32 array of samples (batch axis first).
int8 uses onnxruntime's static quantizer in QDQ format, after its pre-processing step
(symbolic shape inference + graph optimization, which fuses e.g. Conv+BN so the fused
weights, not the unfused ones, get quantized). `exclude_nodes` keeps named nodes in float:
the hook accuracy-aware recipes use to back off sensitive layers.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError, EngineNotInstalledError
from edgepack.runtime.specs import QuantParams, TensorSpec

from .config import QuantizationConfig
from .progress import report

log = logging.getLogger(__name__)

#: Samples fed to the calibrator per run when the batch axis is dynamic.
CALIBRATION_BATCH = 32


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
    proto = onnx.load_from_string(model)
    if config.mode == "fp16":
        from .onnx_fp16 import convert_weights_to_fp16
        return QuantizedOnnx(convert_weights_to_fp16(proto).SerializeToString(),
                             config.to_record())
    with tempfile.TemporaryDirectory(prefix="edgepack-q-") as tmp:
        src, pre, out = Path(tmp, "in.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "out.onnx")
        onnx.save(proto, str(src))
        _preprocess(ortq, src, pre)
        if config.mode == "dynamic":
            _quantize_dynamic(ortq, pre, out, config, exclude_nodes)
            return QuantizedOnnx(out.read_bytes(), config.to_record())
        if not calibration:
            raise ConversionError(
                "int8 quantization needs calibration data (a .npy/.npz file, an image "
                "folder or an iterable of samples); pass --calibration-data")
        samples = _quantize_static(ortq, pre, out, config, calibration, exclude_nodes)
        quantized = onnx.load(str(out))
    record = config.to_record(calibration_samples=samples)
    if not config.int8_io:
        return QuantizedOnnx(compact_names(quantized).SerializeToString(), record)
    from .onnx_int8_io import make_int8_io
    proto, inputs, outputs = make_int8_io(quantized, calibration)
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
    try:
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
                      exclude: Sequence[str]) -> None:
    # Conv is left out: onnxruntime's CPU provider has no ConvInteger kernel for int8
    # weights, and a uint8 variant loses more accuracy than it saves on conv nets, so
    # "dynamic" means what it means elsewhere: int8 weights for the matrix multiplies.
    try:
        ortq.quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm", "Attention", "LSTM",
                                                      "GRU", "EmbedLayerNormalization"],
            per_channel=config.per_channel, reduce_range=config.reduce_range,
            weight_type=ortq.QuantType.QInt8, nodes_to_exclude=list(exclude) or None)
    except Exception as e:
        raise ConversionError(f"onnxruntime dynamic quantization failed: {e}") from e


def _quantize_static(ortq, src: Path, dst: Path, config: QuantizationConfig,
                     calibration: Mapping[str, np.ndarray], exclude: Sequence[str]) -> int:
    import onnx
    graph_inputs = onnx.load(str(src), load_external_data=False).graph.input
    names = [i.name for i in graph_inputs]
    missing = [n for n in names if n not in calibration]
    if missing:
        raise ConversionError(
            f"calibration data has no samples for input(s) {missing}; it has "
            f"{sorted(calibration)}")
    count = min(len(calibration[n]) for n in names)
    count = min(count, config.calibration.samples)
    dynamic_batch = all(_first_dim_dynamic(i) for i in graph_inputs)
    batch = min(CALIBRATION_BATCH, count) if dynamic_batch else 1
    if config.calibration.method != "minmax":
        # The histogram calibrators stack per-run outputs and need equal batches.
        count -= count % batch
    reader = _Reader({n: np.asarray(calibration[n])[:count] for n in names}, batch)
    method = {"minmax": ortq.CalibrationMethod.MinMax,
              "entropy": ortq.CalibrationMethod.Entropy,
              "percentile": ortq.CalibrationMethod.Percentile}[config.calibration.method]
    extra = {"CalibPercentile": config.calibration.percentile,
             # Activations asymmetric (ReLU outputs use the full range); weights symmetric,
             # as the int8 kernels of onnxruntime and XNNPACK expect.
             "ActivationSymmetric": False, "WeightSymmetric": True}
    try:
        ortq.quantize_static(
            str(src), str(dst), reader, quant_format=ortq.QuantFormat.QDQ,
            per_channel=config.per_channel, reduce_range=config.reduce_range,
            activation_type=ortq.QuantType.QInt8,
            weight_type=ortq.QuantType.QInt8, calibrate_method=method,
            nodes_to_exclude=list(exclude) or None, extra_options=extra)
    except Exception as e:
        raise ConversionError(f"onnxruntime static quantization failed: {e}") from e
    log.info("int8: calibrated on %d samples with %s", count, config.calibration.method)
    return count


def _first_dim_dynamic(value_info) -> bool:
    dims = value_info.type.tensor_type.shape.dim
    return bool(dims) and not dims[0].HasField("dim_value")


class _Reader:
    """onnxruntime CalibrationDataReader over in-memory arrays, in fixed-size batches."""

    def __init__(self, arrays: Mapping[str, np.ndarray], batch: int):
        self._arrays, self._batch = arrays, batch
        self._iter = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        count = min(len(a) for a in self._arrays.values())
        for start in range(0, count, self._batch):
            report("calibrate", start, count)
            yield {n: np.ascontiguousarray(a[start:start + self._batch])
                   for n, a in self._arrays.items()}
        report("calibrate", count, count)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._batches()


def quant_params_of(scale: np.ndarray, zero_point: np.ndarray) -> QuantParams:
    """QuantParams from a QuantizeLinear/DequantizeLinear scale and zero point."""
    return QuantParams(tuple(float(s) for s in np.atleast_1d(scale)),
                       tuple(int(z) for z in np.atleast_1d(zero_point)))
