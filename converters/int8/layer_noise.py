"""Per-layer sensitivity in one float pass, and the blocks the search tries first.

The "isolated" ranking (layer_search.py) quantizes the model once per layer with only that
layer int8 and runs it on the calibration set: ~60 quantizations and runs for a
MobileNetV2 (243 s measured). What it measures is, to first order, the relative noise
the layer's int8 form adds: the rounding (and clipping) of each activation tensor it
quantizes (its inputs and its output) plus the rounding of its weights. All three are
known without quantizing anything:

- activation tensors: one run of the float model on a calibration subsample with every
  tensor as an output gives each channel's mean square; with the calibrated range's step
  (per-tensor int8), the rounding noise step^2/12 relative to the median channel's mean
  square is the error a typical channel suffers. Per channel, because an outlier channel
  holds most of a tensor's energy: relative to the whole tensor its coarse step looks
  harmless, while every other channel has lost its resolution (clipping by a narrowed
  range is not counted);
- weights: the relative squared error of symmetric per-channel (or per-tensor) rounding of
  the initializer, as the recipe quantizes it;
- a ReLU/Clip right after a layer is fused into its output range by the quantizer, so the
  layer's output tensor is the activation's output.

A tensor with outlier activations shows up in both its producer's and its consumers'
scores (each quantizes it in onnxruntime's QDQ graph), as in the isolated ranking. The
ranking reuses the calibration's ranges (`Calibrated.ranges()`), and costs one float run of
`samples` samples: no quantization, no int8 run.

`blocks` groups consecutive quantizable layers between branch points (a tensor read by
several nodes, as a residual's input): keeping a whole inverted-residual block float is
tried before single layers, so a producer/consumer pair of one tensor is one candidate.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Calibration samples the one-pass ranking's float run reads.
RANKING_SAMPLES = 64
#: At most this many layers per block (a branch-free chain is cut into such pieces).
BLOCK_LAYERS = 4
_FUSED_ACTIVATIONS = ("Relu", "Clip")


@dataclass(frozen=True)
class LayerNoise:
    """The relative squared error each part of one layer's int8 form adds."""

    node: str
    op_type: str
    inputs: float       # quantizing its activation inputs (sum over them)
    output: float       # quantizing its output (after a fused ReLU/Clip)
    weights: float      # rounding its weights
    tensors: tuple[str, ...]   # the activation tensors it quantizes (inputs, then output)

    @property
    def total(self) -> float:
        return self.inputs + self.output + self.weights


def layer_noise(float_model: bytes, calibration: Mapping[str, np.ndarray],
                ranges: Mapping[str, tuple[float, float]], nodes: Sequence[str],
                activation_type: str = "uint8", per_channel: bool = True,
                reduce_range: bool = False, samples: int = RANKING_SAMPLES
                ) -> dict[str, LayerNoise]:
    """node -> LayerNoise for each of `nodes` (names in `float_model`), from one float run
    on the first `samples` calibration samples and the activation `ranges` in use."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(float_model).graph
    weights = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    by_name = {n.name: n for n in graph.node}
    plan: dict[str, tuple[list[str], str | None, str | None]] = {}
    for name in nodes:
        node = by_name.get(name)
        if node is None:
            continue
        inputs = [i for i in node.input if i and i not in weights and i in ranges]
        out = node.output[0] if node.output else None
        after = consumers.get(out, []) if out else []
        if len(after) == 1 and after[0].op_type in _FUSED_ACTIVATIONS:
            out = after[0].output[0]
        weight = next((i for i in node.input[1:] if i in weights
                       and len(weights[i].dims) >= 2), None)
        plan[name] = (inputs, out if out in ranges else None, weight)
    tensors = sorted({t for inputs, out, _ in plan.values()
                      for t in (*inputs, *([out] if out else []))})
    energies = channel_energies(float_model, calibration, tensors, samples) if tensors else {}
    errors = {t: activation_error(e, *ranges[t], activation_type)
              for t, e in energies.items()}
    result = {}
    for name, (inputs, out, weight) in plan.items():
        node = by_name[name]
        w_error = 0.0
        if weight is not None:
            w = numpy_helper.to_array(weights[weight]).astype(np.float64)
            w_error = weight_rounding_error(w, _channel_axis(node), per_channel, reduce_range)
        in_error = float(sum(errors.get(t, 0.0) for t in inputs))
        out_error = errors.get(out, 0.0) if out else 0.0
        used = tuple(t for t in (*inputs, *([out] if out else [])) if t in errors)
        result[name] = LayerNoise(name, node.op_type, in_error, out_error, w_error, used)
    return result


def channel_energies(float_model: bytes, calibration: Mapping[str, np.ndarray],
                     tensors: Sequence[str], samples: int = RANKING_SAMPLES,
                     batch: int = 8) -> dict[str, np.ndarray]:
    """tensor -> mean square of each channel (axis 1; the whole tensor for fewer axes) on
    the first `samples` calibration samples, from one run of the float model per batch."""
    from .probe import probe_batches
    wanted, batches = probe_batches(float_model, tensors, calibration, samples, batch)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values in batches:
        for t in wanted:
            x = np.asarray(values[t])
            if not np.issubdtype(x.dtype, np.floating) or x.ndim == 0:
                continue
            x = x.astype(np.float64)
            per = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1) if x.ndim >= 2 \
                else x.reshape(1, -1)
            sums[t] = sums.get(t, 0.0) + np.sum(per * per, axis=1)
            counts[t] = counts.get(t, 0) + per.shape[1]
    return {t: sums[t] / counts[t] for t in sums}


def activation_error(energy: np.ndarray, low: float, high: float,
                     activation_type: str = "uint8") -> float:
    """The relative squared error per-tensor int8 rounding of [low, high] gives a typical
    channel: step^2 / 12 over the median channel's mean square. Per channel, not over
    the tensor: one outlier channel holds most of a tensor's energy (so the tensor-wide
    relative error looks small), while the other channels, which the next layer reads with
    comparable weight, lose their resolution. Dead channels (no energy) are left out."""
    qmin, qmax = (0, 255) if activation_type == "uint8" else (-128, 127)
    low, high = min(low, 0.0), max(high, 0.0)
    step = (high - low) / (qmax - qmin)
    live = energy[energy > 1e-20]
    if step <= 0 or not live.size:
        return 0.0
    return float(step * step / 12.0 / np.median(live))


def _channel_axis(node) -> int:
    if node.op_type == "Gemm":
        trans = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans else 1
    if node.op_type == "MatMul":
        return -1
    if node.op_type == "ConvTranspose":
        return 1
    return 0


def weight_rounding_error(w: np.ndarray, axis: int, per_channel: bool = True,
                          reduce_range: bool = False) -> float:
    """||round(w / s) s - w||^2 / ||w||^2 for symmetric int8 scales s (per channel along
    `axis`, or one for the tensor)."""
    qmax = 63.0 if reduce_range else 127.0
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if per_channel \
        else w.reshape(1, -1)
    scale = np.abs(moved).max(axis=1, keepdims=True) / qmax
    scale = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(moved / scale), -qmax, qmax) * scale
    denom = float(np.sum(moved ** 2))
    return float(np.sum((q - moved) ** 2)) / denom if denom > 0 else 0.0


def blocks(float_model: bytes, nodes: Sequence[str],
           max_layers: int = BLOCK_LAYERS) -> list[tuple[str, ...]]:
    """`nodes` (graph order kept) grouped into blocks: a block ends after a layer whose
    output (after a fused ReLU/Clip) is read by more than one node or by none, after an
    Add/Concat (a residual's join), or when it holds `max_layers` layers."""
    import onnx
    graph = onnx.load_from_string(float_model).graph
    consumers: dict[str, int] = {}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
            readers.setdefault(i, []).append(n)
    wanted = set(nodes)
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    for n in graph.node:
        if n.name not in wanted:
            continue
        current.append(n.name)
        out = n.output[0] if n.output else ""
        after = readers.get(out, [])
        if len(after) == 1 and after[0].op_type in _FUSED_ACTIVATIONS:
            out = after[0].output[0]
        if consumers.get(out, 0) != 1 or n.op_type in ("Add", "Concat") or \
                len(current) >= max_layers:
            groups.append(tuple(current))
            current = []
    if current:
        groups.append(tuple(current))
    return groups
