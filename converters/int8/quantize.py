"""Static int8 quantization of an ONNX model following a Recipe, with calibration reuse.

Calibration (running the float model on the calibration set and collecting ranges) is the
slow part; `Calibrated` runs it once and every later quantization of the same prepared graph
(with different layers kept in float, as the sensitivity pass needs) reuses the ranges
through onnxruntime's calibration cache.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .recipes import Recipe

log = logging.getLogger(__name__)

#: Op types the int8 recipes quantize (their int8 kernels exist on CPU engines); the rest
#: of the graph (Reshape, pooling, ...) follows its neighbours through the QDQ fusion.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Op types the sensitivity pass may keep in float: the weighted ones plus the ops that
#: get their own int8 kernel and scale (a residual Add can carry the outliers).
QUANTIZABLE_OPS = WEIGHTED_OPS + ("Add", "Mul", "Concat", "MaxPool", "AveragePool",
                                  "GlobalAveragePool", "Resize")
#: Calibration methods and how many samples each run of the calibrator takes.
METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class CalibrationSettings:
    """method: "minmax" | "entropy" | "percentile"; percentile: the kept percentile.

    float_outputs: the model's outputs are not requantized to 8 bits: the last layer's int32
    result is dequantized straight to float (onnxruntime runs a Gemm/MatMul head as QGemm /
    MatMulIntegerToFloat with a float output). An 8-bit output tensor has one step for its
    whole range (0.19 on logits spanning [-28, 20]), so every class pair closer than that
    ties or flips: the ambiguous inputs where int8 agreement is lost.
    """

    method: str = "minmax"
    percentile: float = 99.999
    batch: int = 16
    float_outputs: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConversionError(f"unknown calibration method {self.method!r}; use one of "
                                  f"{', '.join(METHODS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConversionError(f"calibration percentile must be in (50, 100], got "
                                  f"{self.percentile}")
        if self.batch < 1:
            raise ConversionError("calibration batch must be >= 1")


def weighted_nodes(model_bytes: bytes, ops: Sequence[str] = WEIGHTED_OPS
                   ) -> list[tuple[str, str]]:
    """(node name, op type) of the nodes whose op type is in `ops`, in graph order."""
    import onnx
    graph = onnx.load_from_string(model_bytes).graph
    return [(n.name, n.op_type) for n in graph.node if n.op_type in ops]


def recipe_float_nodes(model_bytes: bytes, recipe: Recipe) -> dict[str, str]:
    """Node name -> reason, for the nodes `recipe` keeps in float in this model."""
    import onnx
    graph = onnx.load_from_string(model_bytes).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    chosen = {}
    for node in graph.node:
        if node.op_type in recipe.float_op_types:
            chosen[node.name] = f"recipe {recipe.name}: {node.op_type} int8 kernels are slower"
        elif (recipe.float_thin_convs and node.op_type == "Conv" and len(node.input) > 1
              and len(shapes.get(node.input[1], ())) >= 2):
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            channels = shapes[node.input[1]][1] * group
            if channels <= recipe.float_thin_convs:
                chosen[node.name] = (f"recipe {recipe.name}: a conv reading {channels} "
                                     "channels is slower in int8 than in float")
    return chosen


def smoothing_nodes(model_bytes: bytes) -> list[str]:
    """The Mul nodes activation smoothing inserted (smoothing.py): never quantized."""
    from .smoothing import SMOOTH_PREFIX
    if SMOOTH_PREFIX.encode() not in model_bytes:
        return []
    import onnx
    return [n.name for n in onnx.load_from_string(model_bytes).graph.node
            if n.name.startswith(SMOOTH_PREFIX)]


class Calibrated:
    """A prepared float model plus its activation ranges, quantizable many times.

    Use as a context manager (it owns a temporary directory holding the cache).
    """

    def __init__(self, model_bytes: bytes, calibration: Mapping[str, np.ndarray],
                 settings: CalibrationSettings = CalibrationSettings()):
        self.model_bytes = model_bytes
        self.settings = settings
        self._tmp = tempfile.TemporaryDirectory(prefix="edgepack-int8-")
        self._dir = Path(self._tmp.name)
        self._model_path = self._dir / "float.onnx"
        self._model_path.write_bytes(model_bytes)
        self._cache = self._dir / "ranges.json"
        self._calibration, static_batch = _checked_calibration(model_bytes, calibration)
        count = min(len(a) for a in self._calibration.values())
        # A graph with a fixed batch axis takes exactly that many samples per run.
        batch = static_batch or min(settings.batch, count)
        self._reader = _Reader(self._calibration, batch,
                               equal=settings.method != "minmax" or bool(static_batch))
        #: Samples the ranges are computed from.
        self.samples = self._reader.samples
        self._count = 0
        #: The float model quantized models are compared against: `model_bytes` unless a
        #: float rewrite made this one (cross-layer equalization sets the original model).
        self.reference_bytes = model_bytes
        #: (nodes kept float, samples digest, int8 model, Score) of the last all-int8
        #: measurement made by the caller (`remember`), so a later pass does not convert
        #: and measure the same model again.
        self._measured: tuple | None = None

    @classmethod
    def with_ranges(cls, model_bytes: bytes, calibration: Mapping[str, np.ndarray],
                    settings: CalibrationSettings,
                    ranges: Mapping[str, tuple[float, float]]) -> "Calibrated":
        """A Calibrated whose activation ranges (tensor -> (low, high)) are given instead
        of measured: quantizing it runs no calibration. `settings.method` is recorded as
        the calibration method. Every tensor the quantizer quantizes needs a range."""
        calibrated = cls(model_bytes, calibration, settings)
        calibrated.replace_ranges(ranges)
        return calibrated

    def replace_ranges(self, ranges: Mapping[str, tuple[float, float]]) -> None:
        """Quantize with these activation ranges (tensor -> (low, high)) from now on, in
        place of the calibrated ones (block reconstruction's learned steps). Every tensor
        the quantizer quantizes needs a range."""
        from onnxruntime.quantization.calibrate import (CalibrationMethod, TensorData,
                                                        TensorsData, save_tensors_data)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.settings.method]
        data = {t: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
                for t, (lo, hi) in ranges.items()}
        save_tensors_data(TensorsData(method, data), self._cache)
        self._measured = None

    @property
    def calibrated(self) -> bool:
        """True once the ranges exist (after the first `quantize`, or given)."""
        return self._cache.exists()

    def ranges(self) -> dict[str, tuple[float, float]]:
        """tensor -> (low, high), the activation ranges `quantize` uses. Raises
        ConversionError before the first `quantize` (calibration runs inside it)."""
        if not self._cache.exists():
            raise ConversionError("no activation ranges yet: quantize once first")
        from onnxruntime.quantization.calibrate import load_tensors_data
        return {t: (float(np.min(d.range_value[0])), float(np.max(d.range_value[1])))
                for t, d in load_tensors_data(self._cache).items()}

    def remember(self, exclude_nodes: Sequence[str], samples: Mapping[str, np.ndarray],
                 model: bytes, score) -> None:
        """Record that quantizing with `exclude_nodes` float gave `model`, which scored
        `score` against `reference_bytes` on `samples`."""
        self._measured = (tuple(sorted(exclude_nodes)), samples_digest(samples), model, score)

    def measured(self, exclude_nodes: Sequence[str], samples: Mapping[str, np.ndarray]):
        """(model, score) remembered for the same float nodes and samples, or None."""
        if self._measured is None:
            return None
        nodes, digest, model, score = self._measured
        if nodes != tuple(sorted(exclude_nodes)) or digest != samples_digest(samples):
            return None
        return model, score

    def __enter__(self) -> "Calibrated":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def replace_model(self, model_bytes: bytes) -> None:
        """Quantize `model_bytes` from now on, with the ranges already calibrated.

        For a graph with the same tensor names whose float values moved slightly (bias
        correction): recalibrating is the slow part and the ranges barely change.
        """
        self.model_bytes = model_bytes
        self._model_path.write_bytes(model_bytes)
        self._measured = None

    def quantize(self, recipe: Recipe, exclude_nodes: Sequence[str] = ()) -> bytes:
        """The int8 model of `recipe`, with `exclude_nodes` (and the recipe's float op types)
        left in float. Raises ConversionError when onnxruntime's quantizer fails."""
        from onnxruntime import quantization as ortq
        qtype = {"uint8": ortq.QuantType.QUInt8, "int8": ortq.QuantType.QInt8}
        method = {"minmax": ortq.CalibrationMethod.MinMax,
                  "entropy": ortq.CalibrationMethod.Entropy,
                  "percentile": ortq.CalibrationMethod.Percentile}[self.settings.method]
        excluded = set(exclude_nodes) | set(recipe_float_nodes(self.model_bytes, recipe))
        # smoothing.py's divisions run in float, before the 8-bit quantizer sees the tensor
        excluded |= set(smoothing_nodes(self.model_bytes))
        self._count += 1
        out = self._dir / f"int8-{self._count}.onnx"
        extra = {"CalibPercentile": self.settings.percentile,
                 # Asymmetric activations use the whole range for post-ReLU tensors;
                 # symmetric weights are what the int8 conv kernels expect.
                 "ActivationSymmetric": False, "WeightSymmetric": True}
        reader = None if self._cache.exists() else self._reader
        # The histogram calibrators print progress to stdout ("Collecting tensor data and
        # making histogram ..."), which would mix with the CLI's own output (and --json).
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter):
                ortq.quantize_static(
                    str(self._model_path), str(out), reader,
                    quant_format={"qdq": ortq.QuantFormat.QDQ,
                                  "qoperator": ortq.QuantFormat.QOperator}[recipe.quant_format],
                    per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                    activation_type=qtype[recipe.activation_type],
                    weight_type=qtype[recipe.weight_type], calibrate_method=method,
                    nodes_to_exclude=sorted(excluded) or None, extra_options=extra,
                    calibration_cache_path=str(self._cache))
        except Exception as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ConversionError(f"onnxruntime static quantization failed: {first}") from e
        finally:
            if chatter.getvalue().strip():
                log.debug("onnxruntime quantizer: %s", chatter.getvalue().strip())
        model = out.read_bytes()
        return float_graph_outputs(model) if self.settings.float_outputs else model


def float_graph_outputs(qdq_model: bytes) -> bytes:
    """`qdq_model` with the QuantizeLinear -> DequantizeLinear pair in front of each graph
    output removed (the producer writes the output in float). Nothing else changes."""
    import onnx
    model = onnx.load_from_string(qdq_model)
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    removed = []
    for out in graph.output:
        dq = producer.get(out.name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" \
            else None
        if q is None or q.op_type != "QuantizeLinear" or uses.get(q.output[0]) != 1:
            continue
        source = producer.get(q.input[0])
        if source is None or uses.get(q.input[0]) != 1:
            continue
        source.output[list(source.output).index(q.input[0])] = out.name
        removed += [q, dq]
    if not removed:
        return qdq_model
    for n in removed:
        graph.node.remove(n)
    return model.SerializeToString()


def samples_digest(samples: Mapping[str, np.ndarray]) -> str:
    """A digest of the sample arrays (names, shapes, dtypes and bytes)."""
    import hashlib
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(samples):
        a = np.ascontiguousarray(samples[name])
        h.update(f"{name}{a.shape}{a.dtype}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _checked_calibration(model_bytes: bytes, calibration: Mapping[str, np.ndarray]
                         ) -> tuple[dict[str, np.ndarray], int | None]:
    """The calibration arrays per model input, and the graph's fixed batch size (or None)."""
    import onnx
    graph = onnx.load_from_string(model_bytes).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    names = [i.name for i in inputs]
    if not calibration:
        raise ConversionError("int8 quantization needs calibration data; pass "
                              "calibration_data / --calibration-data")
    missing = [n for n in names if n not in calibration]
    if missing:
        raise ConversionError(f"calibration data has no samples for input(s) {missing}; it "
                              f"has {sorted(calibration)}")
    # integer inputs (token ids, masks) stay integer: onnxruntime refuses float ids
    arrays = {n: np.ascontiguousarray(calibration[n], dtype=None if np.asarray(
        calibration[n]).dtype.kind in "iub" else np.float32) for n in names}
    if min(len(a) for a in arrays.values()) < 1:
        raise ConversionError("calibration data holds no samples")
    fixed = {d.dim_value for i in inputs for d in i.type.tensor_type.shape.dim[:1]
             if d.HasField("dim_value")}
    return arrays, (min(fixed) if fixed else None)


class _Reader:
    """onnxruntime CalibrationDataReader yielding equal-size batches.

    The histogram calibrators (entropy, percentile) stack per-batch outputs and fail on a
    short last batch ("inhomogeneous shape"), so for them (`equal`) the remainder that does
    not fill a batch is dropped (logged); min/max takes a short last batch.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch: int, equal: bool):
        count = min(len(a) for a in arrays.values())
        if count < batch:
            raise ConversionError(f"the model takes batches of {batch} but the calibration "
                                  f"data has only {count} samples")
        self._batch = batch
        usable = count - count % batch if equal else count
        if usable < count:
            log.info("calibration: %d of %d samples used (equal batches of %d)",
                     usable, count, batch)
        self._arrays = {n: a[:usable] for n, a in arrays.items()}
        self.samples = usable
        self._iter = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        from ..progress import report
        count = min(len(a) for a in self._arrays.values())
        for start in range(0, count, self._batch):
            report("calibrate", start, count)
            yield {n: a[start:start + self._batch] for n, a in self._arrays.items()}
        report("calibrate", count, count)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._batches()

