"""Seeded keyword clips made in the test: rising/falling chirps and a two-tone beep in noise."""
from __future__ import annotations

import numpy as np

RATE = 16000
WINDOW = 9600          # 0.6 s model window
LABELS = ["_silence_", "up", "down", "beep"]
FRONT_END = [{"op": "log_mel", "rate": RATE, "n_fft": 512, "hop": 320, "n_mels": 32,
              "top_db": 80.0}]


def keyword(label: str, rng: np.random.Generator) -> np.ndarray:
    dur = rng.uniform(0.3, 0.4)
    t = np.arange(int(dur * RATE)) / RATE
    if label == "beep":
        f = rng.uniform(0.9, 1.1) * np.where((t // 0.1) % 2 == 0, 1000.0, 1500.0)
        phase = 2 * np.pi * np.cumsum(f) / RATE
    else:
        f0, f1 = rng.uniform(400, 700), rng.uniform(1800, 2600)
        if label == "down":
            f0, f1 = f1, f0
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * dur))
    taper = np.minimum(1.0, np.minimum(t, dur - t) / 0.02)
    return (rng.uniform(0.2, 0.6) * taper * np.sin(phase)).astype(np.float32)


def noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.normal(0, rng.uniform(0.002, 0.01), n)).astype(np.float32)


def clips(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, WINDOW) float32 clips and their label indices; silence includes keywords cut
    at the window's edges (less than a third inside), so partial words do not fire."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, label in enumerate(LABELS):
        for i in range(n_per_class):
            x = noise(WINDOW, rng)
            if label == "_silence_":
                if i % 2:
                    k = keyword(LABELS[1 + i % 3], rng)
                    inside = int(len(k) * rng.uniform(0.05, 0.3))
                    if rng.random() < 0.5:
                        x[:inside] += k[-inside:]
                    else:
                        x[-inside:] += k[:inside]
            else:
                k = keyword(label, rng)
                start = rng.integers(0, WINDOW - len(k))
                x[start:start + len(k)] += k
            xs.append(x)
            ys.append(c)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order], np.asarray(ys)[order]


def stream_with_keywords(seed: int) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """~14 s of noise with 6 keywords; returns the signal and (centre time, label) of each."""
    rng = np.random.default_rng(seed)
    parts, placed, t = [], [], 0.0
    for label in ["up", "beep", "down", "up", "down", "beep"]:
        gap = noise(int(rng.uniform(1.2, 1.8) * RATE), rng)
        k = keyword(label, rng)
        k = k + noise(len(k), rng)
        parts += [gap, k]
        t += len(gap) / RATE
        placed.append((t + len(k) / RATE / 2, label))
        t += len(k) / RATE
    parts.append(noise(RATE, rng))
    return np.concatenate(parts), placed
