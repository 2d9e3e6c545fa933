"""Cross-layer equalization (CLE): match per-channel weight ranges of consecutive convs.

Depthwise-separable nets often have a few output channels of one conv with weights 100x
wider than the rest, while the next conv reads those channels with tiny weights. Per-channel
weight scales cope with the first conv, but the tensor between them is quantized per tensor
and the second conv's input-channel columns share one scale per *output* channel, so the
narrow channels lose all their resolution. Since ReLU(x / s) = ReLU(x) / s for s > 0,
dividing output channel i of conv 1 (weights and bias) by s_i and multiplying conv 2's
input channel i by s_i leaves the float function unchanged; with s_i = sqrt(r1_i / r2_i)
(r = the channel's weight range) both layers end with the same range sqrt(r1_i * r2_i) on
channel i (Nagel et al., "Data-Free Quantization", 2019, §4.1).

By default only pairs joined directly or through one Relu are equalized: ReLU6/Clip(0, 6)
does not commute with a per-channel scale (the clip bound would have to become per channel),
so MobileNetV2's expand -> depthwise -> project chains through ReLU6 are left alone (only its
project -> next expand pairs without a residual are joined directly). `relax_clips=True`
equalizes those too and replaces each such Clip by Relu (as Data-Free Quantization does):
not exact, so it is only kept when the int8 result, measured against the original float
model, is better.
Chains of several convs are swept a few times, as each middle conv is scaled from both sides.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: Sweeps over the chain; each sweep equalizes every pair once (DFQ converges in a few).
SWEEPS = 8
#: Channels whose weight range is below this (dead channels) are not rescaled.
TINY = 1e-8
#: Scale factors are bounded so a dead channel on one side cannot blow up the other.
MAX_SCALE = 1e4


@dataclass(frozen=True)
class EqualizedPair:
    first: str
    second: str
    through: str            # "Relu" or "identity"
    max_scale: float        # largest s_i (or 1/s_i) applied, all sweeps together
    range_ratio_before: float   # max over channels of max(r1/r2, r2/r1) before CLE
    range_ratio_after: float


@dataclass(frozen=True)
class Equalization:
    """The equalized float model and the pairs it rescaled."""

    model_bytes: bytes
    pairs: tuple[EqualizedPair, ...]

    def to_record(self) -> dict:
        before = max((p.range_ratio_before for p in self.pairs), default=1.0)
        after = max((p.range_ratio_after for p in self.pairs), default=1.0)
        return {"pairs": len(self.pairs), "largest_range_ratio_before": float(f"{before:.4g}"),
                "largest_range_ratio_after": float(f"{after:.4g}")}


def equalize(model_bytes: bytes, sweeps: int = SWEEPS, *,
             relax_clips: bool = False) -> Equalization:
    """`model_bytes` (float ONNX, BatchNorm already folded) with every Conv -> (Relu) ->
    Conv pair equalized. Returns the model unchanged (and no pairs) when there is none.

    relax_clips: also equalize pairs joined by Clip(0, max) (ReLU6), replacing that Clip by
    Relu as Data-Free Quantization does. This changes the float function wherever the
    pre-activation exceeds `max`: the caller must measure the result against the original
    float model (prepare_calibrated does) rather than trust it.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    pairs = _pairs(graph, relax_clips)
    if not pairs:
        return Equalization(model_bytes, ())
    inits = {i.name: i for i in graph.initializer}
    values = {n: numpy_helper.to_array(inits[n]).astype(np.float64)
              for a, b, _ in pairs for n in (*a.input[1:3], b.input[1]) if n}
    before = {id(a): _ratio(values[a.input[1]], values[b.input[1]], _group(b))
              for a, b, _ in pairs}
    total: dict[int, np.ndarray] = {}   # per pair, the product of its scales over sweeps
    for _ in range(sweeps):
        for a, b, _kind in pairs:
            w1, w2, group = values[a.input[1]], values[b.input[1]], _group(b)
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(1)
            r2 = _input_ranges(w2, group)
            s = np.ones_like(r1)
            live = (r1 > TINY) & (r2 > TINY)
            s[live] = np.sqrt(r1[live] / r2[live])
            s = np.clip(s, 1.0 / MAX_SCALE, MAX_SCALE)
            values[a.input[1]] = w1 / s.reshape(-1, *([1] * (w1.ndim - 1)))
            if len(a.input) > 2 and a.input[2]:
                values[a.input[2]] = values[a.input[2]] / s
            values[b.input[1]] = _scale_inputs(w2, group, s)
            total[id(a)] = total.get(id(a), 1.0) * s
    for name, value in values.items():
        dtype = numpy_helper.to_array(inits[name]).dtype
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
    for a, _b, kind in pairs:
        if kind == "Clip":   # -> Relu (relax_clips)
            clip = next(n for n in graph.node if n.input and n.input[0] == a.output[0])
            clip.op_type = "Relu"
            del clip.input[1:]
            del clip.attribute[:]
    records = tuple(
        EqualizedPair(a.name, b.name, kind,
                      float(np.max(np.maximum(total[id(a)], 1.0 / total[id(a)]))), before[id(a)],
                      _ratio(values[a.input[1]], values[b.input[1]], _group(b)))
        for a, b, kind in pairs)
    log.info("cross-layer equalization: %d pairs, largest range ratio %.3g -> %.3g",
             len(records), max(p.range_ratio_before for p in records),
             max(p.range_ratio_after for p in records))
    return Equalization(model.SerializeToString(), records)


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _input_ranges(w2: np.ndarray, group: int) -> np.ndarray:
    """max |w| over the weights reading each input channel of a grouped conv."""
    out, per_group = w2.shape[:2]
    out_per_group = out // group
    ranges = np.abs(w2).reshape(group, out_per_group, per_group, -1).max(axis=(1, 3))
    return ranges.reshape(group * per_group)


def _scale_inputs(w2: np.ndarray, group: int, s: np.ndarray) -> np.ndarray:
    out, per_group = w2.shape[:2]
    scaled = w2.reshape(group, out // group, per_group, -1) * \
        s.reshape(group, 1, per_group, 1)
    return scaled.reshape(w2.shape)


def _ratio(w1: np.ndarray, w2: np.ndarray, group: int) -> float:
    r1 = np.abs(w1).reshape(w1.shape[0], -1).max(1)
    r2 = _input_ranges(w2, group)
    live = (r1 > TINY) & (r2 > TINY)
    if not live.any():
        return 1.0
    q = r1[live] / r2[live]
    return float(np.max(np.maximum(q, 1.0 / q)))


def _pairs(graph, relax_clips: bool = False) -> list:
    """(conv 1, conv 2, "Relu" | "identity") for each equalizable pair, in graph order.

    The tensor between them must feed only the next node (and not be a graph output), the
    weights must be initializers used by this node alone, and conv 2's input channels must
    be conv 1's output channels (its weight shape says so)."""
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(tensor: str):
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in outputs else None

    def own_weights(node) -> bool:
        names = [n for n in node.input[1:3] if n]
        return bool(names) and all(n in inits and uses.get(n) == 1 for n in names)

    pairs = []
    for first in graph.node:
        if first.op_type != "Conv" or len(first.input) < 2 or not own_weights(first):
            continue
        nxt = only_consumer(first.output[0])
        kind, between = "identity", first.output[0]
        if nxt is not None and (nxt.op_type == "Relu" or (
                relax_clips and nxt.op_type == "Clip" and _clips_at_zero(nxt, inits))):
            kind, between = nxt.op_type, nxt.output[0]
            nxt = only_consumer(between)
        if nxt is None or nxt.op_type != "Conv" or nxt.input[0] != between \
                or not own_weights(nxt):
            continue
        w1 = inits[first.input[1]].dims
        w2 = inits[nxt.input[1]].dims
        group = _group(nxt)
        if len(w2) < 2 or w2[1] * group != w1[0] or w2[0] % group:
            continue
        pairs.append((first, nxt, kind))
    # A conv may be the second of one pair and the first of the next (chains); its
    # weights are then updated by both, in order, which the sweeps handle.
    return pairs


def _clips_at_zero(node, inits) -> bool:
    """Clip whose lower bound is 0 (ReLU6 and the like), from opset 11 inputs or the older
    `min` attribute."""
    from onnx import numpy_helper
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in inits:
            return False
        return float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0]) == 0.0
    return any(a.name == "min" and a.f == 0.0 for a in node.attribute)
