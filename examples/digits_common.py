"""Shared pieces of the digits examples: data split, two tiny CNNs, timing helpers.

scikit-learn's `load_digits` ships with the package (1797 8x8 grey images, no download).
Pixels are scaled to [0, 1]; the same fixed split is used for training, calibration and the
held-out test set, so numbers are comparable across frameworks and runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray  # (N, 8, 8) float32 in [0, 1]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def nchw(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:, None, :, :])

    def nhwc(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:, :, :, None])


def load(test_fraction: float = 0.2, seed: int = 0) -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=test_fraction, random_state=seed, stratify=data.target)
    return Digits(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64))


def train_torch(digits: Digits, epochs: int = 10, seed: int = 0):
    """Conv16-Conv32-Pool-FC128-FC10 in PyTorch (~70k parameters, a few seconds on CPU)."""
    import torch
    torch.manual_seed(seed)
    # One thread: for a model this small, more threads only add contention (measured 6x
    # slower with the default thread count on a loaded 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))
    x = torch.from_numpy(digits.nchw(digits.x_train))
    y = torch.from_numpy(digits.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    torch.set_num_threads(threads)
    return model.eval()


def train_keras(digits: Digits, epochs: int = 10, seed: int = 0):
    """The same architecture in Keras 3 (NHWC)."""
    import keras
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.nhwc(digits.x_train), digits.y_train, epochs=epochs, batch_size=32,
              verbose=0)
    return model


def bundle_accuracy(path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a bundle run through edgepack.runtime (quantizing int8 inputs)."""
    from edgepack.runtime import load
    with load(path) as model:
        logits = run_float(model, x)
    return float(np.mean(logits.argmax(1) == y))


def run_float(model, x: np.ndarray) -> np.ndarray:
    """Raw run with float data, applying the specs' int8 quantization at the boundary."""
    spec, out_spec = model.inputs[0], model.outputs[0]
    batch = spec.shape[0] if spec.shape[0] > 0 else len(x)
    outs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if spec.quantization is not None and spec.dtype == "int8":
            q = spec.quantization
            chunk = np.clip(np.round(chunk / q.scale[0]) + q.zero_point[0], -128, 127
                            ).astype(np.int8)
        (out,) = model.run({spec.name: chunk}).values()
        if out_spec.quantization is not None and out.dtype == np.int8:
            q = out_spec.quantization
            out = (out.astype(np.float32) - q.zero_point[0]) * q.scale[0]
        outs.append(out)
    return np.concatenate(outs)


def latency_ms(path, x: np.ndarray, runs: int = 200, threads: int = 1) -> float:
    """Median single-sample latency of a bundle through the runtime."""
    from edgepack.runtime import load
    with load(path, threads=threads) as model:
        sample = x[:1]
        for _ in range(10):
            run_float(model, sample)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run_float(model, sample)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)
