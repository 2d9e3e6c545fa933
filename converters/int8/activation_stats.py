"""Activation histograms collected in one float pass, and calibration ranges computed from them.

The per-tensor calibration choice (calibration_choice.py) needs, for every activation
tensor, the MinMax, Percentile and Entropy ranges and the quantization error each gives that
tensor. Running onnxruntime's calibrators once per method re-runs the whole model per method
and builds their histograms in Python per batch (100-180 s on a 224x224 MobileNetV2 on 2
cores). Here the float model runs once, on a subsample of the calibration set, with every
tensor as an output; each tensor's values go into one fixed histogram over its MinMax range
(which the plain calibration already measured on all samples), and everything else is
arithmetic on the histograms:

- percentile: the two-sided central `p` % of the values (one-sided for a tensor >= 0);
- entropy: the range [c*low, c*high] (c in [1/8, 1]) whose 256-level quantization of the
  clipped histogram is closest in KL divergence to it (the TensorRT method, with the
  asymmetric range shrunk around zero rather than a symmetric one);
- the error of a range: for values inside, the rounding noise of a uniform quantizer
  (step^2 / 12; exact zeros cost nothing, the quantizer represents them exactly); for values
  outside, the squared distance to the clipped end. Each value is weighted by 1 / (its
  sample's energy in that tensor), so the sum is the per-sample relative squared error summed
  over samples: one glitch sample with a huge value counts as one sample, as it does for
  top-1 agreement, not as most of the squared error of the set.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Histogram bins per tensor (2048 as onnxruntime's percentile calibrator and TensorRT).
BINS = 2048
#: At most this many values per sample and tensor go into the histograms (evenly strided):
#: enough for the 99.999th percentile, and bounded time on large feature maps.
VALUES_PER_SAMPLE = 1 << 17
#: Smallest fraction of the MinMax range the entropy search considers.
MIN_SHRINK = 1.0 / 8.0
LEVELS = 256


@dataclass(frozen=True)
class TensorHistogram:
    """Values of one tensor over [low, high] (its MinMax range) in BINS bins."""

    low: float
    high: float
    counts: np.ndarray       # values per bin (exact zeros excluded)
    weighted: np.ndarray     # the same, each value weighted by 1 / its sample's energy
    zeros: float             # exact zeros (counted apart: they quantize without error)

    @property
    def centers(self) -> np.ndarray:
        width = (self.high - self.low) / BINS
        return self.low + width * (np.arange(BINS) + 0.5)

    def percentile_range(self, percentile: float) -> tuple[float, float]:
        total = float(self.counts.sum())
        if total <= 0 or self.high <= self.low:
            return self.low, self.high
        cdf = np.cumsum(self.counts) / total
        edges = np.linspace(self.low, self.high, BINS + 1)
        if self.low >= 0.0:      # one-sided (post-ReLU): only the top is clipped
            cut = (100.0 - percentile) / 100.0
            return self.low, float(edges[min(np.searchsorted(cdf, 1.0 - cut) + 1, BINS)])
        cut = (100.0 - percentile) / 200.0
        left = float(edges[np.searchsorted(cdf, cut)])
        right = float(edges[min(np.searchsorted(cdf, 1.0 - cut) + 1, BINS)])
        return min(left, 0.0), max(right, 0.0)

    def entropy_range(self, steps: int = 57) -> tuple[float, float]:
        """The shrunk range whose 256-level histogram is closest (KL) to the clipped one."""
        total = float(self.counts.sum())
        if total <= 0 or self.high <= self.low:
            return self.low, self.high
        lo, hi = min(self.low, 0.0), max(self.high, 0.0)
        width = (self.high - self.low) / BINS
        best, best_kl = (self.low, self.high), np.inf
        for c in np.linspace(MIN_SHRINK, 1.0, steps):
            a, b = c * lo, c * hi
            i0 = int(np.clip(np.floor((a - self.low) / width), 0, BINS - 1))
            i1 = int(np.clip(np.ceil((b - self.low) / width), i0 + 1, BINS))
            p = self.counts[i0:i1].astype(np.float64).copy()
            p[0] += self.counts[:i0].sum()
            p[-1] += self.counts[i1:].sum()
            kl = _kl_to_quantized(p)
            if kl < best_kl:
                best_kl = kl
                best = (self.low + i0 * width if i0 else self.low,
                        self.low + i1 * width if i1 < BINS else self.high)
        return best

    def error(self, low: float, high: float, activation_type: str) -> float:
        """Summed per-sample relative squared error of quantizing to [low, high]."""
        qmin, qmax = (0, 255) if activation_type == "uint8" else (-128, 127)
        low, high = min(low, 0.0), max(high, 0.0)
        step = (high - low) / (qmax - qmin)
        if step <= 0:
            return float(np.sum(self.weighted * self.centers ** 2))
        # The quantizer's own representable range (zero point rounded to an integer).
        zero = np.round(qmin - low / step)
        rep_low, rep_high = (qmin - zero) * step, (qmax - zero) * step
        v = self.centers
        clipped = np.clip(v, rep_low, rep_high)
        per_value = np.where(v == clipped, step * step / 12.0, (v - clipped) ** 2)
        return float(np.sum(self.weighted * per_value))


def _kl_to_quantized(p: np.ndarray) -> float:
    """KL(p || q), q = p merged into LEVELS groups and spread back over its non-empty bins."""
    n = len(p)
    groups = np.minimum((np.arange(n) * LEVELS) // max(n, 1), LEVELS - 1)
    nonzero = p > 0
    mass = np.bincount(groups, weights=p, minlength=LEVELS)
    filled = np.bincount(groups, weights=nonzero.astype(np.float64), minlength=LEVELS)
    q = np.where(nonzero, mass[groups] / np.maximum(filled[groups], 1.0), 0.0)
    ps, qs = p / p.sum(), q / max(q.sum(), 1e-300)
    keep = ps > 0
    return float(np.sum(ps[keep] * np.log(ps[keep] / qs[keep])))


def collect_histograms(float_model: bytes, calibration: Mapping[str, np.ndarray],
                       ranges: Mapping[str, tuple[float, float]], samples: int = 64,
                       batch: int = 8) -> dict[str, TensorHistogram]:
    """Histograms of the tensors in `ranges` (tensor -> its MinMax (low, high)) on the first
    `samples` calibration samples, from one run of the float model per batch."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(float_model)
    present = {o.name for o in model.graph.output}
    graph_inputs = [i.name for i in model.graph.input]
    for t in ranges:
        if t not in present and t not in graph_inputs:
            model.graph.output.append(onnx.ValueInfoProto(name=t))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    feeds = {n: np.asarray(calibration[n][:samples]) for n in names}
    count = min(len(a) for a in feeds.values())
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else min(batch, count)
    wanted = [t for t in ranges if t in outputs or t in feeds]
    counts = {t: np.zeros(BINS) for t in wanted}
    weighted = {t: np.zeros(BINS) for t in wanted}
    zeros = dict.fromkeys(wanted, 0.0)
    skipped: set[str] = set()
    for start in range(0, count - count % step or count, step):
        chunk = {n: a[start:start + step] for n, a in feeds.items()}
        values = dict(zip(outputs, session.run(outputs, chunk)))
        values.update(chunk)
        for t in wanted:
            x = np.asarray(values[t])
            if not np.issubdtype(x.dtype, np.floating) or x.ndim == 0:
                skipped.add(t)
                continue
            low, high = ranges[t]
            flat = x.reshape(len(x), -1)
            stride = max(1, flat.shape[1] // VALUES_PER_SAMPLE)
            flat = flat[:, ::stride].astype(np.float32, copy=False)
            scale = BINS / (high - low) if high > low else 0.0
            for row in flat:
                energy = max(float(np.dot(row, row)), 1e-30)
                nz = row[row != 0.0]
                zeros[t] += (len(row) - len(nz)) / energy
                idx = np.clip(((nz - low) * scale).astype(np.int64), 0, BINS - 1)
                binned = np.bincount(idx, minlength=BINS)
                counts[t] += binned
                weighted[t] += binned / energy
    return {t: TensorHistogram(float(ranges[t][0]), float(ranges[t][1]), counts[t],
                               weighted[t], zeros[t]) for t in wanted if t not in skipped}


def method_ranges(histograms: Mapping[str, TensorHistogram], methods: Sequence[str],
                  percentile: float) -> dict[str, dict[str, tuple[float, float]]]:
    """method -> tensor -> range, for "minmax", "percentile" and "entropy"."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for method in methods:
        if method == "minmax":
            out[method] = {t: (h.low, h.high) for t, h in histograms.items()}
        elif method == "percentile":
            out[method] = {t: h.percentile_range(percentile) for t, h in histograms.items()}
        elif method == "entropy":
            out[method] = {t: h.entropy_range() for t, h in histograms.items()}
        else:
            raise ValueError(f"unknown calibration method {method!r}")
    return out
