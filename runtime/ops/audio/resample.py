"""Polyphase resampling (reference: scipy.signal.resample_poly, default Kaiser(5.0) window).

The rate change up/down (reduced by their gcd) uses a linear-phase low-pass FIR of
2 * 10 * max(up, down) + 1 taps, cutoff at 1/max(up, down) of the upsampled Nyquist,
Kaiser window beta 5.0, gain `up` — the filter scipy designs by default — applied as a
zero-phase filter with zeros beyond both ends, so sample m of the output sits at input
time m * down / up. Matches scipy to float rounding (tests: max error < 1e-6 on speech).
Only the taps that meet real (non-inserted-zero) samples are computed: the filter is
split into `up` phases, and the work is one gather + one multiply-add per output sample.
"""
from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

from .. import Context, Params, register_op
from ...errors import InputError

_HALF_LEN_FACTOR = 10
_KAISER_BETA = 5.0


def rate_ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    if rate_in <= 0 or rate_out <= 0:
        raise InputError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    g = gcd(int(rate_in), int(rate_out))
    return int(rate_out) // g, int(rate_in) // g


@lru_cache(maxsize=16)
def _filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """The low-pass FIR (length 2*half+1, centred on tap `half`), scaled by `up`."""
    max_rate = max(up, down)
    half = _HALF_LEN_FACTOR * max_rate
    n = np.arange(-half, half + 1, dtype=np.float64)
    cutoff = 1.0 / max_rate  # fraction of the upsampled Nyquist frequency
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(2 * half + 1, _KAISER_BETA)
    h /= h.sum()  # unit gain at DC (scipy's firwin scales the same way)
    return h * up, half


@lru_cache(maxsize=16)
def _plan(up: int, down: int, n_in: int):
    """Gather indices into the zero-padded input and per-output weights."""
    h, half = _filter(up, down)
    n_out = -(-n_in * up // down)
    m = np.arange(n_out, dtype=np.int64)
    t = m * down  # position in the upsampled signal
    # input sample n contributes h[t - n*up + half] when |t - n*up| <= half
    n_lo = -((half - t) // up)                      # ceil((t - half) / up)
    taps = (2 * half) // up + 2
    idx = n_lo[:, None] + np.arange(taps)[None, :]  # (n_out, taps)
    k = t[:, None] - idx * up + half
    valid = (k >= 0) & (k <= 2 * half)
    weights = np.where(valid, h[np.clip(k, 0, 2 * half)], 0.0)
    pad = taps + 1
    return idx + pad, weights, pad


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample 1-D `x` by up/down (reference: scipy.signal.resample_poly(x, up, down))."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise InputError(f"resample takes 1-D samples, got shape {x.shape}")
    g = gcd(up, down)
    up, down = up // g, down // g
    if up == down == 1:
        return x.astype(np.float32, copy=True)
    if not len(x):
        return np.zeros(0, np.float32)
    idx, weights, pad = _plan(up, down, len(x))
    padded = np.concatenate([np.zeros(pad), x.astype(np.float64), np.zeros(pad + idx.shape[1])])
    return np.einsum("ij,ij->i", padded[idx], weights).astype(np.float32)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample 1-D float samples from `rate_in` to `rate_out` Hz."""
    up, down = rate_ratio(rate_in, rate_out)
    return resample_poly(x, up, down)


@register_op("resample")
def _resample(p: Params, ctx: Context):
    """`{"op": "resample", "from": 44100, "to": 16000}` — for inputs recorded at a known rate."""
    rate_in = p.integer("from", minimum=1)
    rate_out = p.integer("to", minimum=1)
    up, down = rate_ratio(rate_in, rate_out)

    def run(x):
        return resample_poly(np.asarray(x, dtype=np.float32).reshape(-1), up, down)
    return run


class StreamResampler:
    """`resample_poly` for audio arriving in chunks: `push(chunk)` returns every output
    sample whose filter taps are all known, `flush()` the rest at the end of the stream.
    The concatenated outputs equal `resample_poly` of the concatenated input (float
    rounding aside: tested within 1e-6)."""

    def __init__(self, rate_in: int, rate_out: int):
        self.up, self.down = rate_ratio(rate_in, rate_out)
        h, self.half = _filter(self.up, self.down)
        up, half = self.up, self.half
        self.taps = (2 * half) // up + 2
        # weights per phase of t = m*down: tap j meets input n_lo + j at filter index
        # 2*half - r - j*up, with r = (half - t) mod up (see _plan)
        self._weights = np.zeros((up, self.taps))
        for phase in range(up):
            r = (half - phase) % up
            k = 2 * half - r - np.arange(self.taps) * up
            ok = (k >= 0) & (k <= 2 * half)
            self._weights[phase, ok] = h[k[ok]]
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0)
        self._start = 0      # absolute index of _buf[0]
        self._seen = 0       # input samples pushed
        self._next = 0       # next output index

    def _n_lo(self, m: np.ndarray) -> np.ndarray:
        return -((self.half - m * self.down) // self.up)

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.up == self.down:
            return x.astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._seen += len(x)
        return self._produce(self._seen)

    def _produce(self, available: int, limit: int | None = None) -> np.ndarray:
        last = (self.up * (available - self.taps) + self.half) // self.down
        if limit is not None:
            last = min(last, limit - 1)
        if last < self._next:
            return np.zeros(0, np.float32)
        m = np.arange(self._next, last + 1)
        n_lo = self._n_lo(m)
        lo = int(n_lo[0])
        if lo < self._start:  # the first outputs reach before the signal: zeros there
            self._buf = np.concatenate([np.zeros(self._start - lo), self._buf])
            self._start = lo
        idx = (n_lo - self._start)[:, None] + np.arange(self.taps)[None, :]
        y = np.einsum("ij,ij->i", self._buf[idx], self._weights[(m * self.down) % self.up])
        self._next = last + 1
        keep = int(self._n_lo(np.array([self._next]))[0]) - self._start
        if keep > 0:
            self._buf = self._buf[keep:]
            self._start += keep
        return y.astype(np.float32)

    def flush(self) -> np.ndarray:
        """The outputs still owed at the end (input taken as zeros beyond its end)."""
        if self.up == self.down:
            return np.zeros(0, np.float32)
        total = -(-self._seen * self.up // self.down)
        self._buf = np.concatenate([self._buf, np.zeros(self.taps + 1)])
        return self._produce(self._seen + self.taps + 1, limit=total)
