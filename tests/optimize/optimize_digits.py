"""Shared by tests/optimize and benchmarks/optimize.py: digits data, the CNNs, int8 export.

Digits are 8x8; they are upsampled to 32x32 so a CNN of widths 32-128 does enough work per
image that removing channels changes latency measurably (not only the per-op overhead).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepack.converters.optimize import DistillConfig, TrainConfig

SIZE = 32

#: Training of the unpruned model, fine-tuning after 50% structured pruning, distillation.
BASE_TRAIN = TrainConfig(epochs=4, lr=3e-3, seed=0)
FINE_TUNE = TrainConfig(epochs=3, lr=1e-3, seed=0)
DISTILL = DistillConfig(epochs=20, lr=3e-3, temperature=8.0, alpha=0.9)


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


def export_onnx(model: nn.Module, path: Path, size: int = SIZE) -> Path:
    """Scratch fp32 ONNX export (batch dim dynamic)."""
    model.eval()
    example = torch.zeros(1, 1, size, size)
    torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    """Scratch static int8 quantization (QDQ, per-channel weights) with onnxruntime."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"x": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self._it, None)

    # reduce_range: 7-bit weights avoid the int16 saturation of the AVX2 (non-VNNI) int8
    # kernels, which otherwise costs this model >10 accuracy points on such hosts.
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return out


def int8_model(model: nn.Module, workdir: Path, name: str, calibration: np.ndarray) -> Path:
    """Export + quantize `model`; returns the int8 .onnx path."""
    fp32 = export_onnx(model, Path(workdir) / f"{name}.fp32.onnx")
    return quantize_int8(fp32, Path(workdir) / f"{name}.int8.onnx", calibration)
