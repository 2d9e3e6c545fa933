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
- entropy: the clipped range whose 256-level quantization of the clipped histogram is
  closest in KL divergence to it (the TensorRT method; the asymmetric range's upper end is
  searched first, then its lower end, each between 1/8 of its MinMax extent and all of it);
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

    def entropy_range(self, steps: int = 33) -> tuple[float, float]:
        """The clipped range whose 256-level histogram is closest (KL) to the clipped one:
        the upper end searched first (lower end at MinMax), then the lower end."""
        total = float(self.counts.sum())
        if total <= 0 or self.high <= self.low:
            return self.low, self.high
        width = (self.high - self.low) / BINS
        zero = int(np.clip(np.round(-self.low / width), 0, BINS)) if self.low < 0 else 0

        def kl(i0: int, i1: int) -> float:
            sliced = self.counts[i0:i1].astype(np.float64)
            p = sliced.copy()
            p[0] += self.counts[:i0].sum()
            p[-1] += self.counts[i1:].sum()
            return _kl_to_quantized(p, sliced)

        def search(fixed: int, upper: bool) -> int:
            span = (BINS - zero) if upper else zero
            if span <= 1:
                return BINS if upper else 0
            best, best_kl = None, np.inf
            for c in np.linspace(MIN_SHRINK, 1.0, steps):
                edge = zero + max(1, int(np.ceil(c * span))) if upper else \
                    zero - max(1, int(np.ceil(c * span)))
                i0, i1 = (fixed, edge) if upper else (edge, fixed)
                if i1 - i0 < 2:
                    continue
                value = kl(i0, i1)
                if value < best_kl:
                    best, best_kl = edge, value
            return best if best is not None else (BINS if upper else 0)

        i1 = search(0, upper=True)
        i0 = search(i1, upper=False) if self.low < 0 else 0
        low = self.low if i0 == 0 else self.low + i0 * width
        high = self.high if i1 >= BINS else self.low + i1 * width
        return low, high

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


def _kl_to_quantized(p: np.ndarray, sliced: np.ndarray) -> float:
    """KL(p || q): p is the clipped histogram (values outside folded into the end bins), q
    the in-range values (`sliced`) merged into LEVELS groups and spread back over the
    non-empty bins of p (as TensorRT: q does not hold the clipped mass, so clipping costs)."""
    n = len(p)
    groups = np.minimum((np.arange(n) * LEVELS) // max(n, 1), LEVELS - 1)
    nonzero = p > 0
    mass = np.bincount(groups, weights=sliced, minlength=LEVELS)
    filled = np.bincount(groups, weights=nonzero.astype(np.float64), minlength=LEVELS)
    q = np.where(nonzero, mass[groups] / np.maximum(filled[groups], 1.0), 0.0)
    ps, qs = p / p.sum(), q / max(q.sum(), 1e-300)
    keep = ps > 0
    qs = np.maximum(qs, 1e-12)   # clipped mass where no value stayed: a large, finite cost
    return float(np.sum(ps[keep] * np.log(ps[keep] / qs[keep])))


def collect_histograms(float_model: bytes, calibration: Mapping[str, np.ndarray],
                       ranges: Mapping[str, tuple[float, float]], samples: int = 64,
                       batch: int = 8) -> dict[str, TensorHistogram]:
    """Histograms of the tensors in `ranges` (tensor -> its MinMax (low, high)) on the first
    `samples` calibration samples, from one run of the float model per batch."""
    from .probe import probe_batches

    wanted, batches = probe_batches(float_model, ranges, calibration, samples, batch)
    counts = {t: np.zeros(BINS) for t in wanted}
    weighted = {t: np.zeros(BINS) for t in wanted}
    zeros = dict.fromkeys(wanted, 0.0)
    skipped: set[str] = set()
    for values in batches:
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
            n = len(flat)
            energy = np.maximum(np.einsum("ij,ij->i", flat, flat, dtype=np.float64), 1e-30)
            # One bincount for the batch: row r's bins are offset by r * BINS.
            idx = np.clip(((flat - low) * scale).astype(np.int64), 0, BINS - 1)
            idx += (np.arange(n, dtype=np.int64) * BINS)[:, None]
            binned = np.bincount(idx.ravel(), minlength=n * BINS).reshape(n, BINS)
            # Exact zeros were counted in the bin of 0: take them out, count them apart.
            nzero = np.count_nonzero(flat == 0.0, axis=1)
            if nzero.any():
                binned[:, int(np.clip((0.0 - low) * scale, 0, BINS - 1))] -= nzero
            zeros[t] += float(np.sum(nzero / energy))
            counts[t] += binned.sum(axis=0)
            weighted[t] += (binned / energy[:, None]).sum(axis=0)
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
