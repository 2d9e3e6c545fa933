"""Learned rounding (AdaRound-style) for a layer's int8 weights.

Round-to-nearest minimizes each weight's own error, not the layer's output error: when the
inputs are correlated, rounding some weights the other way cancels errors in W·x. AdaRound
(Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", 2020) learns,
per weight, whether to round down or up on calibration data:

    W~ = s * (floor(W / s) + h(V)),  h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)
    loss = ||(W~ - W) X||^2 / ||(W_rtn - W) X||^2 + lam * mean(1 - |2h - 1|^beta)

with beta annealed from 20 to 2 so h ends at 0 or 1. Here the reconstruction is the layer's
pre-activation output with float inputs (the cheap layer-local form), and ||dW X||^2 is
computed from the input's second-moment matrix C = X X^T per conv group (im2col patches),
so each iteration costs one [out, k] x [k, k] product whatever the calibration set size.
numpy only, with hand-written gradients and Adam.

The grid (per-channel scale, zero point, integer bounds) is read from a model the recipe
actually quantized, and the channel's largest |weight| keeps its nearest rounding, so the
quantizer recomputes exactly the same scales and the learned weights are already on its
grid: quantizing them again changes nothing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundSettings:
    """iterations: Adam steps per layer; max_weights: larger layers are skipped (budget);
    samples: calibration samples whose inputs build C; rows: at most this many patch rows
    per batch go into C (positions are subsampled evenly)."""

    iterations: int = 300
    learning_rate: float = 0.1
    #: Weight of the push of h to 0/1 against the RTN-normalized reconstruction (0.3 gave
    #: the lowest error on the tests' toy layers among 0.01-1).
    regularization: float = 0.3
    max_weights: int = 400_000
    samples: int = 64
    rows: int = 8192
    #: Wall-clock budget for all layers of one call; layers left when it runs out keep
    #: round-to-nearest (the worst-ranked come first, so they get the time).
    seconds: float = 30.0


@dataclass(frozen=True)
class RoundedLayer:
    node: str
    op_type: str
    weight_name: str
    weight: np.ndarray          # the learned weights, on the int8 grid (float32)
    error_nearest: float        # ||dW X||^2 / ||W X||^2 with round-to-nearest
    error_learned: float        # the same with the learned rounding
    flipped: int                # weights rounded the other way than nearest


@dataclass(frozen=True)
class LearnedRounding:
    """Learned weights per layer, applicable to any float model of the same graph."""

    layers: tuple[RoundedLayer, ...]

    def apply(self, model_bytes: bytes, skip: Sequence[str] = ()) -> bytes:
        """`model_bytes` with the learned weights of every layer except `skip` (kept
        float: they keep their own float weights)."""
        import onnx
        from onnx import numpy_helper
        chosen = [r for r in self.layers if r.node not in set(skip)]
        if not chosen:
            return model_bytes
        model = onnx.load_from_string(model_bytes)
        inits = {i.name: i for i in model.graph.initializer}
        for r in chosen:
            inits[r.weight_name].CopyFrom(numpy_helper.from_array(r.weight, r.weight_name))
        return model.SerializeToString()

    def to_record(self) -> dict:
        return {"layers": [{"node": r.node, "error_nearest": float(f"{r.error_nearest:.4g}"),
                            "error_learned": float(f"{r.error_learned:.4g}"),
                            "flipped": r.flipped} for r in self.layers]}


def learn_rounding(float_model: bytes, quantized_model: bytes,
                   samples: Mapping[str, np.ndarray], nodes: Sequence[str],
                   settings: AdaRoundSettings = AdaRoundSettings()) -> LearnedRounding:
    """Learned rounding for the Conv/Gemm `nodes` of `float_model` (constant weights, at
    most `settings.max_weights` each), on the grid `quantized_model` (a QDQ model of the
    same graph) uses. Layers whose learned rounding is not better than nearest on the
    calibration inputs are left out."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(float_model).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    grids = weight_grids(quantized_model)
    wanted = set(nodes)
    layers = [n for n in graph.node if n.name in wanted and n.op_type in ("Conv", "Gemm")
              and len(n.input) > 1 and n.input[1] in inits and n.name in grids
              and inits[n.input[1]].size <= settings.max_weights and _plain(n)]
    if not layers:
        return LearnedRounding(())
    order = {name: i for i, name in enumerate(nodes)}
    layers.sort(key=lambda n: order[n.name])     # the caller's order: most harmful first
    grams = _input_grams(float_model, layers, samples, settings)
    rounded = []
    started = time.monotonic()
    for node in layers:
        if node.name not in grams:
            continue
        if time.monotonic() - started > settings.seconds:
            log.info("adaround: %.0f s budget spent; %s and later layers keep nearest "
                     "rounding", settings.seconds, node.name)
            break
        w = inits[node.input[1]].astype(np.float64)
        transposed = node.op_type == "Gemm" and not _attr(node, "transB", 0)
        w2 = w.T if transposed else w
        scale, zero, qmin, qmax = grids[node.name]
        group = _attr(node, "group", 1) if node.op_type == "Conv" else 1
        q, before, after = round_layer(w2.reshape(w2.shape[0], -1), scale, zero, qmin, qmax,
                                       grams[node.name], group, settings)
        if after >= before:
            log.info("adaround: %s no better than nearest (%.3g vs %.3g); left", node.name,
                     after, before)
            continue
        nearest = np.clip(np.round(w2.reshape(w2.shape[0], -1) / scale[:, None]) + zero[:, None],
                          qmin, qmax)
        learned = ((q - zero[:, None]) * scale[:, None]).reshape(w2.shape)
        learned = learned.T if transposed else learned
        rounded.append(RoundedLayer(node.name, node.op_type, node.input[1],
                                    learned.astype(np.float32), before, after,
                                    int(np.sum(q != nearest))))
        log.info("adaround: %s output error %.3g -> %.3g (%d weights flipped)", node.name,
                 before, after, rounded[-1].flipped)
    return LearnedRounding(tuple(rounded))


def round_layer(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, qmin: int, qmax: int,
                gram: np.ndarray, group: int, settings: AdaRoundSettings = AdaRoundSettings()
                ) -> tuple[np.ndarray, float, float]:
    """Learned integer weights q [out, k] for float weights w [out, k] with per-output-channel
    `scale`/`zero`, and the relative output errors (nearest, learned) under `gram`
    [group, k, k] (the per-group input second moments)."""
    out, k = w.shape
    per = out // group
    units = w / scale[:, None]
    base = np.floor(units)
    frac = units - base
    nearest = np.clip(np.round(units) + zero[:, None], qmin, qmax) - zero[:, None]
    # The channel's largest |w| sets the quantizer's scale: it keeps its nearest rounding.
    fixed = np.abs(w) >= np.abs(w).max(axis=1, keepdims=True)
    fixed |= (base + zero[:, None] < qmin) | (base + 1 + zero[:, None] > qmax)
    g = gram.reshape(group, k, k)
    signal = _quadratic(w, g, per)

    def error(q_units: np.ndarray) -> float:
        return _quadratic((q_units - units) * scale[:, None], g, per) / max(signal, 1e-30)

    rtn_error = error(nearest)
    if rtn_error <= 0:
        return nearest + zero[:, None], 0.0, 0.0
    rtn_abs = rtn_error * signal
    p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    # The loop runs in float32 (half the memory traffic; rounding decisions are coarse).
    f32 = np.float32
    v = np.log(p / (1 - p)).astype(f32)
    m = np.zeros_like(v)
    s2 = np.zeros_like(v)
    g32, sc = g.astype(f32), scale[:, None].astype(f32)
    base32, units32 = base.astype(f32), units.astype(f32)
    free = (~fixed).astype(f32)
    fixed_h = ((nearest - base) * fixed).astype(f32)
    coef, reg = 2.0 / rtn_abs, settings.regularization / v.size
    warmup = settings.iterations // 5
    for step in range(1, settings.iterations + 1):
        sig = 1.0 / (1.0 + np.exp(-v))
        raw = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(raw, 0.0, 1.0) * free + fixed_h
        delta = (base32 + h - units32) * sc
        grad_h = _times_gram(delta, g32, per) * (sc * coef)
        if step > warmup:
            beta = 20.0 + (2.0 - 20.0) * (step - warmup) / max(1, settings.iterations - warmup)
            t = 2.0 * h - 1.0
            grad_h -= (2.0 * beta * reg) * np.abs(t) ** (beta - 1.0) * np.sign(t)
        grad_v = grad_h * sig * (1 - sig) * ((ZETA - GAMMA) * free) * ((raw > 0) & (raw < 1))
        m = 0.9 * m + 0.1 * grad_v
        s2 = 0.999 * s2 + 0.001 * grad_v * grad_v
        v -= (settings.learning_rate / (1 - 0.9 ** step)) * m / (
            np.sqrt(s2 / (1 - 0.999 ** step)) + 1e-8)
    hard = np.where(fixed, nearest - base, (v >= 0).astype(np.float64))
    learned = np.clip(base + hard + zero[:, None], qmin, qmax) - zero[:, None]
    learned_error = error(learned)
    if learned_error >= rtn_error:
        return nearest + zero[:, None], rtn_error, rtn_error
    return learned + zero[:, None], rtn_error, learned_error


def _quadratic(delta: np.ndarray, gram: np.ndarray, per: int) -> float:
    """sum over groups of trace(delta_g C_g delta_g^T)."""
    d = delta.reshape(gram.shape[0], per, -1)
    return float(np.sum(np.matmul(d, gram) * d))


def _times_gram(delta: np.ndarray, gram: np.ndarray, per: int) -> np.ndarray:
    d = delta.reshape(gram.shape[0], per, -1)
    return np.matmul(d, gram).reshape(delta.shape)   # batched BLAS (einsum here is not)


def weight_grids(quantized_model: bytes) -> dict[str, tuple]:
    """Node name -> (scale [out], zero point [out], qmin, qmax) of its int8 weights in a
    QDQ model (per-tensor grids are broadcast to every output channel)."""
    from .qdq_weights import quantized_weights
    grids = {}
    for name, w in quantized_weights(quantized_model).items():
        node, q = w.node, w.values
        if not np.issubdtype(q.dtype, np.integer):
            continue
        info = np.iinfo(q.dtype)
        transposed = node.op_type == "Gemm" and not _attr(node, "transB", 0)
        out = q.shape[1] if transposed else q.shape[0]
        scale = w.scale.astype(np.float64).reshape(-1)
        zero = w.zero_point.astype(np.float64).reshape(-1)
        if scale.size not in (1, out):
            continue
        grids[name] = (np.broadcast_to(scale, (out,)).copy(),
                       np.broadcast_to(zero, (out,)).copy(), int(info.min), int(info.max))
    return grids


def _attr(node, name: str, default):
    return next((a.i if a.type == 2 else list(a.ints) for a in node.attribute
                 if a.name == name), default)


def _plain(node) -> bool:
    if node.op_type == "Gemm":
        return not _attr(node, "transA", 0)
    return True


def _input_grams(float_model: bytes, layers: list, samples: Mapping[str, np.ndarray],
                 settings: AdaRoundSettings) -> dict[str, np.ndarray]:
    """Per layer, the second moment of its input patches per group: [group, k, k],
    normalized per row."""
    import onnx
    from onnx import numpy_helper

    from .probe import probe_feeds, probe_session

    model = onnx.load_from_string(float_model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    session = probe_session(model, (node.input[0] for node in layers))
    feeds = probe_feeds(session, samples, settings.samples)
    fixed = session.get_inputs()[0].shape[0]
    count = len(next(iter(feeds.values())))
    batch = fixed if isinstance(fixed, int) and fixed > 0 else min(16, count)
    wanted = [t for t in dict.fromkeys(n.input[0] for n in layers) if t not in feeds]
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    for start in range(0, count - count % batch or count, batch):
        chunk = {n: a[start:start + batch] for n, a in feeds.items()}
        values = dict(zip(wanted, session.run(wanted, chunk))) if wanted else {}
        values.update(chunk)
        for node in layers:
            x = values[node.input[0]].astype(np.float64)
            patches = _patches(node, x, inits[node.input[1]].shape, settings.rows)
            if patches is None:
                continue
            gram = np.einsum("grk,grl->gkl", patches, patches, optimize=True)
            sums[node.name] = sums.get(node.name, 0.0) + gram
            rows[node.name] = rows.get(node.name, 0) + patches.shape[1]
    return {n: g / rows[n] for n, g in sums.items()}


def _patches(node, x: np.ndarray, w_shape, rows: int) -> np.ndarray | None:
    """At most `rows` input rows as [group, rows, k] in the weight's (in, kh, kw) order."""
    if node.op_type == "Gemm":
        return x.reshape(1, x.shape[0], -1)
    if x.ndim != 4 or len(w_shape) != 4:
        return None
    group = _attr(node, "group", 1)
    kh, kw = w_shape[2:]
    strides = _attr(node, "strides", [1, 1]) or [1, 1]
    dil = _attr(node, "dilations", [1, 1]) or [1, 1]
    pads = _attr(node, "pads", [0, 0, 0, 0]) or [0, 0, 0, 0]
    if next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET") not in (
            b"NOTSET", b"VALID"):
        return None
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span_h, span_w = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, ::strides[0], ::strides[1], ::dil[0], ::dil[1]]
    n, c, ho, wo = windows.shape[:4]
    per = c // group
    # Positions are subsampled before the (large) patch matrix is materialized.
    total = n * ho * wo
    pick = np.arange(total) if total <= rows else \
        np.linspace(0, total - 1, rows).astype(np.int64)
    ni, hi, wi = np.unravel_index(pick, (n, ho, wo))
    chosen = windows[ni, :, hi, wi]                     # [r, c, kh, kw]
    chosen = chosen.reshape(len(pick), group, per * kh * kw).transpose(1, 0, 2)
    return np.ascontiguousarray(chosen)


#: The accuracy-aware pass learns the rounding of at most this many of the layers its
#: sensitivity ranking marks worst (Conv/Gemm within the weight budget).
WORST_LAYERS = 4


def try_learned_rounding(float_model: bytes, split, ranking, measure, current: tuple,
                         in_use: list, settings: AdaRoundSettings = AdaRoundSettings(),
                         layers: int = WORST_LAYERS, *, decide
                         ) -> tuple[tuple, tuple[dict, ...]]:
    """Learned rounding for the `layers` worst Conv/Gemm of `ranking` (most harmful first),
    on the grid of `current` = (all-int8 model, Score), fitted on `split.fit`
    (selection.FittedSplit); kept (appended to `in_use`, which `measure` applies to the
    int8 layers of every later mix) only when the all-int8 model is better with it on the
    held-back `split.decide`, scored by `decide` (selection.fitted_better: significantly
    higher agreement, or within its noise a lower divergence). Returns the new
    (model, Score) and the method's record."""
    from .selection import fitted_better, fitted_fields, fitted_record
    worst = [s.node for s in ranking if s.op_type in ("Conv", "Gemm")][:layers]
    if not worst:
        return current, ()
    learned = learn_rounding(float_model, current[0], split.fit, worst, settings)
    if not learned.layers:
        return current, ()
    in_use.append(learned)
    after = measure([])
    before_decide, after_decide = decide(current[0]), decide(after[0])
    kept = fitted_better(after_decide, before_decide)
    before = current[1]
    record = fitted_record("adaround", learned.to_record(), before, after[1], kept,
                           fitted_fields(after_decide, before_decide, split))
    log.info("accuracy-aware: learned rounding of %d layers: agreement %.4f -> %.4f, error "
             "%.3g -> %.3g (%s)", len(learned.layers), before.agreement, after[1].agreement,
             before.error, after[1].error, "kept" if kept else "undone")
    if not kept:
        in_use.clear()
        return current, (record,)
    return after, (record,)
