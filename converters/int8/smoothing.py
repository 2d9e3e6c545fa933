"""Activation smoothing (SmoothQuant-style) for MatMul/Gemm inputs with outlier channels.

A MatMul's input activation is quantized with one scale for the whole tensor, its weights
with one scale per output channel. When a few input channels carry values 10-100x the
others (LayerNorm outputs of trained transformers do: Bondarenko et al. 2021, Xiao et al.
2023), the tensor's step is set by them and every other channel keeps a few levels. Since
X W = (X diag(1/s)) (diag(s) W), dividing input channel j by s_j and multiplying weight
row j by s_j leaves the float function unchanged; with s_j = a_j^alpha / w_j^(1-alpha)
(a_j: channel j's largest |x| on the calibration samples, w_j: weight row j's largest |w|
over every MatMul reading the tensor) the activation's range moves into weights, whose
per-channel scales absorb it (SmoothQuant, Xiao et al. 2023, alpha = 0.5). Unlike
SmoothQuant, s is taken relative to the median channel and never below 1: the wide channels
are divided, no channel is amplified (see `smooth`).

The division has to happen somewhere:

- folded into the producer when it is a LayerNormalization over the last axis with constant
  scale and bias whose output is read only by the smoothed MatMuls (pre-LN transformers):
  no new op;
- otherwise a Mul by 1/s (named ``edgepack_smooth/...``) feeds the smoothed MatMuls while
  every other reader (a post-LN residual Add, an attention MatMul with no constant weight)
  keeps the original tensor. `Calibrated.quantize` leaves these Muls in float, so the
  outliers never meet an 8-bit quantizer before the division. It costs one elementwise
  multiply per activation value, against the K multiply-adds per value of the MatMul.

Only tensors whose channel ranges are uneven are touched (largest channel maximum over the
median one above `OUTLIER_RATIO`): an even tensor has nothing to gain and would only
move rounding noise into the weights. The float function is unchanged (up to float32
rounding), so the rewrite is judged against the original model like cross-layer
equalization (calibration_choice.prepare_calibrated).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Collection, Mapping

import numpy as np

log = logging.getLogger(__name__)

#: A tensor is smoothed when its largest channel maximum is over this many times the
#: median channel's: per-tensor 8 bits then leave the median channel ~255/ratio levels.
OUTLIER_RATIO = 8.0
#: The migration strength of SmoothQuant: 0.5 splits the range evenly (in log scale)
#: between activations and weights; larger moves more of it into the weights.
ALPHA = 0.5
#: The strengths the accuracy-aware pass measures (the better one is kept, if better).
ALPHAS = (0.5, 0.75)
#: Scales are bounded so a dead channel or an all-zero weight row cannot blow up the other.
MAX_SCALE = 1e3
#: Calibration samples the channel maxima are read from: all of them (None), as MinMax
#: calibration reads its ranges. On 64 of 600 a 2-layer BERT's second FFN input showed a
#: channel max / median of 17.6: most of its 128 GELU units had not fired yet (median max
#: 0.17, GELU's negative dip); on all 600 it is 5.9, and smoothing on the 64 raised the
#: int8 model's divergence from fp32 5x (0.00015 -> 0.00075, docs/int8-accuracy.md).
SAMPLES: int | None = None
#: Name prefix of the Mul nodes smoothing inserts (left in float by the quantizer).
SMOOTH_PREFIX = "edgepack_smooth/"


@dataclass(frozen=True)
class SmoothedTensor:
    tensor: str
    readers: tuple[str, ...]        # the MatMul/Gemm nodes whose weight rows were scaled
    folded_into: str | None         # the LayerNormalization that took 1/s, or None: a Mul
    outlier_ratio_before: float     # largest channel max over the median channel max
    outlier_ratio_after: float
    largest_scale: float            # max of s_j and 1/s_j


@dataclass(frozen=True)
class Smoothing:
    """The smoothed float model, the tensors it smoothed, and why none were if so."""

    model_bytes: bytes
    tensors: tuple[SmoothedTensor, ...]
    alpha: float
    reason: str = ""

    def to_record(self) -> dict:
        return {"alpha": self.alpha, "tensors": len(self.tensors),
                "folded": sum(1 for t in self.tensors if t.folded_into),
                "muls_inserted": sum(1 for t in self.tensors if not t.folded_into),
                "largest_outlier_ratio_before": _short(max(
                    (t.outlier_ratio_before for t in self.tensors), default=1.0)),
                "largest_outlier_ratio_after": _short(max(
                    (t.outlier_ratio_after for t in self.tensors), default=1.0))}


def smooth(model_bytes: bytes, calibration: Mapping[str, np.ndarray], *,
           alpha: float = ALPHA, outlier_ratio: float = OUTLIER_RATIO,
           samples: int | None = SAMPLES, float_nodes: Collection[str] | None = None
           ) -> Smoothing:
    """`model_bytes` (float ONNX) with the inputs of its MatMul/Gemm layers that have
    outlier channels smoothed. Returns the model unchanged, with a `reason`, when there is
    no such input.

    float_nodes: the nodes the quantizer will leave in float. A division can only be
    inserted after a float producer (or a graph input): a quantized producer's output is
    already 8-bit, outliers and all, when the Mul reads it. None: every node but the
    MatMul/Gemm/Conv layers stays float (static int8 of transformers, MatMuls only)."""
    return smooth_each(model_bytes, calibration, (alpha,), outlier_ratio=outlier_ratio,
                       samples=samples, float_nodes=float_nodes)[0]


def smooth_each(model_bytes: bytes, calibration: Mapping[str, np.ndarray],
                alphas: tuple[float, ...] = ALPHAS, *, outlier_ratio: float = OUTLIER_RATIO,
                samples: int | None = SAMPLES, float_nodes: Collection[str] | None = None
                ) -> tuple[Smoothing, ...]:
    """`smooth` at each strength in `alphas`, from one run of the float model for the
    channel maxima (they do not depend on the strength)."""
    import onnx
    groups = _reader_groups(onnx.load_from_string(model_bytes).graph)
    if not groups:
        return tuple(Smoothing(model_bytes, (), alpha, "no MatMul/Gemm with constant "
                               "weights reads an activation") for alpha in alphas)
    maxima = channel_maxima(model_bytes, calibration, list(groups), samples)
    return tuple(_smoothed(model_bytes, maxima, alpha, outlier_ratio, float_nodes)
                 for alpha in alphas)


def _smoothed(model_bytes: bytes, maxima: Mapping[str, np.ndarray], alpha: float,
              outlier_ratio: float, float_nodes: Collection[str] | None) -> Smoothing:
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    groups = _reader_groups(graph)
    # Taken before any rewrite: a rewrite moves only the readers of the tensor it smooths.
    producers = {o: n for n in graph.node for o in n.output}
    readers_of: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers_of.setdefault(name, []).append(node)
    inits = {i.name: i for i in graph.initializer}
    weights = {n: numpy_helper.to_array(inits[n]) for n in {
        node.input[1] for readers in groups.values() for node in readers}}
    largest = 1.0
    done: list[SmoothedTensor] = []
    blocked = 0         # outliers, but neither foldable nor after a float producer
    for tensor, readers in groups.items():
        a = maxima.get(tensor)
        channels = _as_rows(weights[readers[0].input[1]], readers[0]).shape[0]
        if a is None or a.shape[0] != channels:
            continue
        ratio = _outlier_ratio(a)
        largest = max(largest, ratio)
        if ratio <= outlier_ratio:
            continue
        producer = producers.get(tensor)
        only_readers = tensor not in {o.name for o in graph.output} and \
            all(n in readers for n in readers_of.get(tensor, ()))
        foldable = _layer_norm_to_fold(producer, tensor, only_readers, inits, len(a))
        if foldable is None and not _after_float(producer, float_nodes):
            blocked += 1
            continue
        w = np.max([np.abs(_as_rows(weights[n.input[1]], n)).max(axis=1) for n in readers],
                   axis=0)
        s = np.ones_like(a, dtype=np.float64)
        live = (a > 0) & (w > 0)
        s[live] = a[live] ** alpha / w[live] ** (1.0 - alpha)
        # Relative to the median channel, and only ever a division: the channels above the
        # median give up range, none is amplified. An amplified channel that was quiet on
        # every calibration sample (a sparse FFN unit) would be clipped the first time it
        # fires on new data; a common factor changes nothing but the magnitudes.
        if live.any():
            s[live] /= np.median(s[live])
        s = np.clip(s, 1.0, MAX_SCALE)
        for node in readers:
            _scale_rows(graph, inits, node, s)
        folded = None
        if foldable is not None:
            folded = _fold(graph, inits, foldable, s)
        else:
            _insert_division(graph, tensor, producer, readers, s)
        done.append(SmoothedTensor(tensor, tuple(n.name for n in readers), folded, ratio,
                                   _outlier_ratio(a / s),
                                   float(np.max(np.maximum(s, 1.0 / s)))))
    if not done and blocked:
        return Smoothing(model_bytes, (), alpha,
                         f"{blocked} MatMul/Gemm input(s) have outlier channels, but none "
                         "comes from a LayerNormalization it could be folded into or from "
                         "a node left in float (a division after a quantized producer "
                         "would read its 8-bit output)")
    if not done:
        return Smoothing(model_bytes, (), alpha,
                         f"no MatMul/Gemm input has outlier channels (largest channel "
                         f"max / median {largest:.3g} <= {outlier_ratio:g})")
    _drop_unused_initializers(graph)
    log.info("activation smoothing (alpha %g): %d tensor(s), largest outlier ratio %.3g -> "
             "%.3g", alpha, len(done), max(t.outlier_ratio_before for t in done),
             max(t.outlier_ratio_after for t in done))
    return Smoothing(model.SerializeToString(), tuple(done), alpha)


def channel_maxima(model_bytes: bytes, calibration: Mapping[str, np.ndarray],
                   tensors: list[str], samples: int | None = SAMPLES) -> dict[str, np.ndarray]:
    """tensor -> the largest |x| of each channel (last axis) on the first `samples` (None:
    all) calibration samples, from one run of the float model per batch."""
    from .probe import probe_batches
    if samples is None:
        samples = min(len(a) for a in calibration.values())
    wanted, batches = probe_batches(model_bytes, tensors, calibration, samples)
    maxima: dict[str, np.ndarray] = {}
    for values in batches:
        for t in wanted:
            x = np.asarray(values[t])
            if not np.issubdtype(x.dtype, np.floating) or x.ndim == 0:
                continue
            m = np.abs(x.reshape(-1, x.shape[-1])).max(axis=0).astype(np.float64)
            maxima[t] = np.maximum(maxima[t], m) if t in maxima else m
    return maxima


def _reader_groups(graph) -> dict[str, list]:
    """activation tensor -> the MatMul/Gemm nodes that read it as their first input with a
    2-D constant weight as the second (the nodes whose weight rows can take the scale)."""
    inits = {i.name: i for i in graph.initializer}
    groups: dict[str, list] = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        x, w = node.input[0], node.input[1]
        if x in inits or w not in inits or len(inits[w].dims) != 2:
            continue
        if node.op_type == "Gemm" and _attr(node, "transA", 0):
            continue
        groups.setdefault(x, []).append(node)
    return groups


def _attr(node, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _as_rows(w: np.ndarray, node) -> np.ndarray:
    """The weight as [input channel, output channel]."""
    return w.T if node.op_type == "Gemm" and _attr(node, "transB", 0) else w


def _scale_rows(graph, inits, node, s: np.ndarray) -> None:
    """Multiply `node`'s weight rows (input channels) by s, in a weight of its own."""
    from onnx import numpy_helper
    w = numpy_helper.to_array(inits[node.input[1]])
    rows = _as_rows(w.astype(np.float64), node) * s[:, None]
    name = _unique(graph, f"{node.input[1]}/smoothed")
    init = numpy_helper.from_array(_as_rows(rows, node).astype(w.dtype), name)   # back
    graph.initializer.append(init)
    inits[name] = init
    node.input[1] = name


def _layer_norm_to_fold(producer, tensor: str, only_readers: bool, inits, channels: int):
    """`producer` when it is a LayerNormalization 1/s can go into: over the last axis,
    constant scale and bias of one value per channel, its output `tensor` read only by the
    smoothed MatMuls (`only_readers`). Else None."""
    if producer is None or producer.op_type != "LayerNormalization" or \
            producer.output[0] != tensor or _attr(producer, "axis", -1) != -1 or \
            not only_readers:
        return None
    params = [n for n in producer.input[1:3] if n]
    if not params or any(n not in inits or list(inits[n].dims) != [channels] for n in params):
        return None
    return producer


def _after_float(producer, float_nodes: Collection[str] | None) -> bool:
    if producer is None:            # a graph input: only its readers quantize it
        return True
    if float_nodes is None:
        return producer.op_type not in ("MatMul", "Gemm", "Conv", "ConvTranspose")
    return producer.name in float_nodes or producer.op_type not in _quantized_op_types()


def _quantized_op_types() -> frozenset[str]:
    """The op types onnxruntime's static quantizer quantizes by default (the union of its
    QDQ and QOperator registries, which is what quantize_static uses)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


def _fold(graph, inits, producer, s: np.ndarray) -> str:
    """Divide the LayerNormalization's scale and bias by s (copies of their own)."""
    from onnx import numpy_helper
    for position, name in enumerate(producer.input[1:3], start=1):
        if not name:
            continue
        value = numpy_helper.to_array(inits[name])
        new = _unique(graph, f"{name}/smoothed")
        init = numpy_helper.from_array((value.astype(np.float64) / s).astype(value.dtype), new)
        graph.initializer.append(init)
        inits[new] = init
        producer.input[position] = new
    return producer.name or producer.output[0]


def _insert_division(graph, tensor: str, producer, readers: list, s: np.ndarray) -> None:
    """A Mul by 1/s feeding `readers`, inserted right after `producer` (or first, for a
    graph input): the graph stays topologically sorted."""
    from onnx import helper, numpy_helper
    inverse = _unique(graph, f"{SMOOTH_PREFIX}{tensor}/inverse_scale")
    graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inverse))
    smoothed = _unique(graph, f"{SMOOTH_PREFIX}{tensor}")
    mul = helper.make_node("Mul", [tensor, inverse], [smoothed],
                           name=_unique(graph, f"{SMOOTH_PREFIX}{tensor}/divide"))
    for node in readers:
        node.input[0] = smoothed
    at = 0 if producer is None else list(graph.node).index(producer) + 1
    graph.node.insert(at, mul)


def _drop_unused_initializers(graph) -> None:
    """The weights and LayerNorm parameters replaced by scaled copies, unless still read."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _unique(graph, name: str) -> str:
    taken = {i.name for i in graph.initializer} | {n.name for n in graph.node} | \
        {o for n in graph.node for o in n.output}
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}/{k}"
    return candidate


def _outlier_ratio(a: np.ndarray) -> float:
    live = a[a > 0]
    if not live.size:
        return 1.0
    return float(live.max() / np.median(live))


def _short(x: float) -> float:
    return float(f"{x:.4g}")
