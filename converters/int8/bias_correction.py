"""Bias correction: remove the expected output shift that int8 weights introduce.

Rounding a layer's weights to int8 changes each output channel by (W_q - W) · x. Over the
data that error has a non-zero mean whenever the inputs do (post-ReLU activations always
have a positive mean), and the shift adds up layer after layer: it is one of the reasons int8
agreement collapses on real depthwise-separable nets while confident images stay right.
The expected shift of output channel o is (W_q - W)[o] · E[x], with E[x] the per-channel
mean of the layer's input on the calibration set. Subtracting it from the float bias before
quantizing makes the int8 layer unbiased (Nagel et al., "Data-Free Quantization", 2019, §4.2;
here E[x] is measured on the calibration data rather than inferred from BatchNorm).

W_q is read back from a model the recipe actually quantized, so the correction matches the
weight scales, bit width and rounding of the quantizer that will ship. Conv (any group
count) and Gemm with constant weights are corrected; a missing bias is added.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Calibration samples used to estimate the per-channel input means.
MEAN_SAMPLES = 128


@dataclass(frozen=True)
class LayerCorrection:
    node: str
    op_type: str
    max_shift: float        # largest |bias change| among the layer's output channels
    relative_shift: float   # max_shift / max |bias| (or / 1 without a bias)
    bias: np.ndarray        # the corrected bias (float32)
    bias_name: str | None   # the node's bias initializer, None when the node had none


@dataclass(frozen=True)
class BiasCorrection:
    """What changed per layer, applicable to any mix of int8 and float layers."""

    float_model: bytes
    layers: tuple[LayerCorrection, ...]

    @property
    def model_bytes(self) -> bytes:
        """The float model with every layer's correction applied."""
        return self.apply()

    def apply(self, float_nodes: Sequence[str] = ()) -> bytes:
        """The float model with corrected biases, except for `float_nodes`: a layer kept
        in float has no int8 weight error to correct, so it keeps its own bias."""
        import onnx
        skip = set(float_nodes)
        chosen = [c for c in self.layers if c.node not in skip]
        if not chosen:
            return self.float_model
        model = onnx.load_from_string(self.float_model)
        nodes = {n.name: n for n in model.graph.node}
        for c in chosen:
            node = nodes[c.node]
            name = c.bias_name or f"{c.node}_corrected_bias"
            _set_initializer(model.graph, name, c.bias)
            if c.bias_name is None:
                while len(node.input) < 3:
                    node.input.append("")
                node.input[2] = name
        return model.SerializeToString()

    def to_record(self) -> dict:
        return {"layers": len(self.layers),
                "largest_shift": max((c.max_shift for c in self.layers), default=0.0)}


def correct_biases(float_model: bytes, quantized_model: bytes,
                   samples: Mapping[str, np.ndarray]) -> BiasCorrection:
    """`float_model` with each int8 layer's expected output shift subtracted from its bias.

    `quantized_model` is a QDQ model of the same graph (its DequantizeLinear weights give
    W_q); `samples` are calibration inputs by model input name.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(float_model).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    quantized = _dequantized_weights(quantized_model)
    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm")
              and len(n.input) > 1 and n.input[1] in weights and n.name in quantized
              and _plain_gemm(n)]
    if not layers:
        return BiasCorrection(float_model, ())
    means = _input_means(float_model, [n.input[0] for n in layers], samples)
    corrections = []
    for node in layers:
        w = weights[node.input[1]].astype(np.float64)
        w_q = quantized[node.name].astype(np.float64)
        if w_q.shape != w.shape or node.input[0] not in means:
            continue
        shift = _expected_shift(node, w_q - w, means[node.input[0]])
        if shift is None:
            continue
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias = weights[bias_name].astype(np.float64) if bias_name else np.zeros(len(shift))
        scale = float(np.max(np.abs(bias))) or 1.0
        largest = float(np.max(np.abs(shift)))
        corrections.append(LayerCorrection(node.name, node.op_type, largest, largest / scale,
                                           (bias - shift).astype(np.float32), bias_name))
        log.debug("bias correction: %s max shift %.3g", node.name, largest)
    return BiasCorrection(float_model, tuple(corrections))


def _plain_gemm(node) -> bool:
    """Gemm with alpha = beta = 1, untransposed A (y = A·B' + C): the form exporters write."""
    if node.op_type != "Gemm":
        return True
    attrs = {a.name: a for a in node.attribute}
    return (attrs["alpha"].f if "alpha" in attrs else 1.0) == 1.0 and \
        (attrs["beta"].f if "beta" in attrs else 1.0) == 1.0 and \
        (attrs["transA"].i if "transA" in attrs else 0) == 0


def _expected_shift(node, delta: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """E[(W_q - W) x] per output channel, from the per-channel input mean."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        delta = delta if trans_b else delta.T          # -> [out, in]
        return delta @ mean if delta.shape[1] == mean.shape[0] else None
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    out_channels, in_per_group = delta.shape[:2]
    if mean.shape[0] != in_per_group * group:
        return None
    # Padding makes border outputs see zeros instead of E[x]; the interior dominates.
    per_input = delta.reshape(out_channels, in_per_group, -1).sum(-1)   # [out, in/group]
    groups = np.arange(out_channels) // (out_channels // group)
    segment = mean.reshape(group, in_per_group)[groups]                 # [out, in/group]
    return np.sum(per_input * segment, axis=1)


def _input_means(float_model: bytes, tensors: list[str],
                 samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) mean of each named tensor over the calibration samples."""
    from .probe import probe_feeds, probe_session

    session = probe_session(float_model, tensors)
    feeds = probe_feeds(session, samples, MEAN_SAMPLES)
    fixed = session.get_inputs()[0].shape[0]
    batch = fixed if isinstance(fixed, int) and fixed > 0 else len(next(iter(feeds.values())))
    wanted = list(dict.fromkeys(tensors))
    computed = [n for n in wanted if n not in feeds]
    sums: dict[str, np.ndarray] = {}
    count = len(next(iter(feeds.values())))
    for start in range(0, count - count % batch or count, batch):
        chunk = {n: a[start:start + batch] for n, a in feeds.items()}
        values = dict(zip(computed, session.run(computed, chunk))) if computed else {}
        for name in wanted:
            value = chunk[name] if name in chunk else values[name]
            axes = (0,) + tuple(range(2, value.ndim))
            sums[name] = sums.get(name, 0.0) + value.astype(np.float64).mean(axis=axes)
    runs = max(1, len(range(0, count - count % batch or count, batch)))
    return {name: total / runs for name, total in sums.items()}


def _dequantized_weights(quantized_model: bytes) -> dict[str, np.ndarray]:
    """Node name -> its weight as the QDQ model dequantizes it (W_q in float)."""
    from .qdq_weights import quantized_weights
    out = {}
    for name, w in quantized_weights(quantized_model).items():
        q = w.values.astype(np.float64)
        scale, zero = w.scale.astype(np.float64), w.zero_point.astype(np.float64)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * q.ndim
            shape[w.axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        out[name] = (q - zero) * scale
    return out


def _set_initializer(graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper
    tensor = numpy_helper.from_array(value, name)
    for i, init in enumerate(graph.initializer):
        if init.name == name:
            graph.initializer[i].CopyFrom(tensor)
            return
    graph.initializer.append(tensor)
