"""Shared by tests/optimize and benchmarks/optimize.py: digits data, the CNNs, int8 export.

Digits are 8x8; they are upsampled to 32x32 so a CNN of widths 32-128 does enough work per
image that removing channels changes latency measurably (not only the per-op overhead).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepack.converters import optimize
from edgepack.converters.optimize import DistillConfig, TrainConfig

SIZE = 32

#: Training of the unpruned model, fine-tuning after 50% structured pruning, distillation.
BASE_TRAIN = TrainConfig(epochs=4, lr=3e-3, seed=0)
FINE_TUNE = TrainConfig(epochs=3, lr=1e-3, seed=0)
#: Distillation on the whole train split, and on a 300-sample labeled transfer set (the
#: student's whole labeled budget; the teacher was trained on the full split).
DISTILL = DistillConfig(epochs=20, lr=3e-3, temperature=4.0, alpha=0.9)
TRANSFER_SAMPLES = 300
DISTILL_TRANSFER = dataclasses.replace(DISTILL, epochs=40)


@contextlib.contextmanager
def one_torch_thread():
    """Train with one intra-op thread, restoring the previous count afterwards.

    On a shared 2-core host, two spinning OpenMP threads per process are several times slower
    than one; and results are reproducible only at a fixed thread count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def digits_split(seed: int = 0, size: int = SIZE):
    """(x_train, y_train, x_test, y_test): float32 NCHW in [0, 1], int64 labels; 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).numpy()
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def digits_cnn(widths=(32, 64, 128, 128)) -> nn.Sequential:
    """The teacher / unpruned model: 4 conv blocks, global pooling, one linear head."""
    torch.manual_seed(0)
    w1, w2, w3, w4 = widths
    return nn.Sequential(
        *_block(1, w1), nn.MaxPool2d(2),
        *_block(w1, w2), nn.MaxPool2d(2),
        *_block(w2, w3), *_block(w3, w4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w4, 10))


def student_cnn(seed: int = 0) -> nn.Sequential:
    """A small student (about 1.6% of the teacher's parameters), initialized from `seed`."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def prune_and_fine_tune(base: nn.Module, x_train, y_train, amount: float = 0.5):
    """A pruned copy of `base` (structured, L1) fine-tuned with FINE_TUNE; returns (model, result)."""
    model = copy.deepcopy(base)
    result = optimize.prune_structured(model, torch.as_tensor(x_train[:2]),
                                       optimize.StructuredPruneConfig(amount=amount))
    optimize.fine_tune(model, (x_train, y_train), FINE_TUNE)
    return model, result


def int8_bundle(model: nn.Module, out: Path, x_train, x_test, y_test):
    """Convert with `edgepack.convert` to an int8 ONNX bundle, validated on the test split."""
    import edgepack

    return edgepack.convert(model, out, quantize="int8", example_inputs=(x_train[:1],),
                            calibration_data=x_train[:200], validation_data=x_test,
                            validation_labels=y_test)


def onnx_parameter_count(bundle_path: Path) -> int:
    """Scalars stored as initializers in the bundle's ONNX model (what the device holds)."""
    import onnx
    from edgepack.runtime import read_bundle

    proto = onnx.load_from_string(read_bundle(bundle_path).model_bytes())
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer)


def bundle_accuracy(model, x, y) -> float:
    """Top-1 accuracy of a loaded bundle (edgepack.runtime Model) on (x, y)."""
    name = model.inputs[0].name
    logits = next(iter(model.run({name: x}).values()))
    return float((logits.argmax(1) == y).mean())


def interleaved_latency(models: dict, x: np.ndarray, repeats: int,
                        threads: int | None = 1) -> dict[str, float]:
    """Median seconds per `run` of each model on `x`, timed in alternating order
    (edgepack.benchmark.time_interleaved: both models see the same machine load)."""
    from edgepack.benchmark import pool_pause, time_interleaved
    names = list(models)
    runners = [lambda m=models[n]: m.run({m.inputs[0].name: x}) for n in names]
    times = time_interleaved(runners, rounds=repeats, warmup=5, pause=pool_pause(threads))
    return {n: float(np.median(t)) for n, t in zip(names, times)}


def distill_vs_alone(teacher: nn.Module, x_train, y_train, x_test, y_test, seeds,
                     config: DistillConfig = DISTILL):
    """For each seed: (distilled accuracy, alone accuracy) of the student from the same init.

    Both runs use `config`'s epochs, lr, batch order and seed on the same (x_train, y_train);
    only the loss differs (alone = plain cross-entropy on the labels).
    """
    alone_config = TrainConfig(epochs=config.epochs, lr=config.lr,
                               batch_size=config.batch_size)
    rows = []
    for seed in seeds:
        distilled, alone = student_cnn(seed), student_cnn(seed)
        optimize.distill(teacher, distilled, (x_train, y_train),
                         dataclasses.replace(config, seed=seed))
        optimize.fine_tune(alone, (x_train, y_train), dataclasses.replace(alone_config, seed=seed))
        rows.append((optimize.evaluate(distilled, (x_test, y_test))[1],
                     optimize.evaluate(alone, (x_test, y_test))[1]))
    return rows
