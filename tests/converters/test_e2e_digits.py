"""End to end on scikit-learn digits: train in PyTorch and Keras, convert to ONNX and TFLite
in every mode, and check what the issue promises, measured through edgepack.runtime on the
held-out test split (360 images):
    int8 accuracy drop <= 1.5 points, fp16 drop <= 0.2 points (vs the source model),
    int8 model file <= 30% of the fp32 one.
PyTorch -> TFLite needs the optional litert-torch extra; without it the test asserts the
error that names the extra.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import digits_common as dc  # noqa: E402

from edgepack.converters import ConversionConfig, QuantizationConfig, convert_model  # noqa: E402
from edgepack.runtime import read_bundle  # noqa: E402
from edgepack.runtime.errors import ConversionError, EngineNotInstalledError  # noqa: E402

pytestmark = pytest.mark.slow
MODES = ("none", "fp16", "dynamic", "int8")
MAX_DROP = {"none": 0.0, "fp16": 0.2, "dynamic": 1.5, "int8": 1.5}


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return dc.load()


def _check_framework(source, x_train, x_test, digits, target, tmp_path, source_acc):
    sizes, accs = {}, {}
    for mode in MODES:
        cfg = ConversionConfig(target=target, quantization=QuantizationConfig(mode=mode),
                               name=f"digits-{mode}", labels=tuple(str(i) for i in range(10)),
                               validation_samples=len(x_test))
        result = convert_model(source, tmp_path / f"{target}-{mode}.edgepack", cfg,
                               example_inputs=x_train[:1], calibration_data=x_train[:300],
                               validation_data=x_test, validation_labels=digits.y_test)
        sizes[mode] = result.model_bytes
        accs[mode] = dc.bundle_accuracy(result.path, x_test, digits.y_test)
        task = read_bundle(result.path).manifest.validation["task"]
        assert task["source"] == pytest.approx(source_acc)
        assert task["bundle"] == pytest.approx(accs[mode])  # manifest agrees with a re-run
    for mode in MODES:
        drop = (source_acc - accs[mode]) * 100
        assert drop <= MAX_DROP[mode] + 1e-9, (target, mode, source_acc, accs[mode])
    assert sizes["int8"] <= 0.30 * sizes["none"], (target, sizes)
    assert sizes["fp16"] <= 0.55 * sizes["none"], (target, sizes)
    return sizes, accs


def test_pytorch_digits(digits, tmp_path):
    torch = pytest.importorskip("torch")
    model = dc.train_torch(digits)
    x_train, x_test = digits.nchw(digits.x_train), digits.nchw(digits.x_test)
    with torch.no_grad():
        source_acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy()
                            == digits.y_test).mean())
    assert source_acc >= 0.95
    _check_framework(model, x_train, x_test, digits, "onnx", tmp_path, source_acc)
    if not any(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_torch")):
        with pytest.raises(EngineNotInstalledError, match="convert-torch-tflite"):
            convert_model(model, tmp_path / "t.edgepack", ConversionConfig(target="tflite"),
                          example_inputs=x_train[:1])
        return
    # litert-torch converts fp32 only (quantized modes are refused, pointing at ONNX).
    result = convert_model(model, tmp_path / "t.edgepack", ConversionConfig(target="tflite"),
                           example_inputs=x_train[:1], validation_data=x_test,
                           validation_labels=digits.y_test)
    task = result.validation["task"]
    assert result.validation["passed"] and result.validation["top1_agreement"] >= 0.99
    # fp32 on both sides: at most one validation image may flip on rounding.
    assert abs(task["bundle"] - task["source"]) <= 1 / result.validation["samples"] + 1e-9
    with pytest.raises(ConversionError, match="--target onnx"):
        convert_model(model, tmp_path / "q.edgepack",
                      ConversionConfig(target="tflite",
                                       quantization=QuantizationConfig(mode="int8")),
                      example_inputs=x_train[:1], calibration_data=x_train[:50])


def test_keras_digits(digits, tmp_path):
    pytest.importorskip("tensorflow")
    model = dc.train_keras(digits)
    x_train, x_test = digits.nhwc(digits.x_train), digits.nhwc(digits.x_test)
    source_acc = float((np.asarray(model(x_test)).argmax(1) == digits.y_test).mean())
    assert source_acc >= 0.95
    for target in ("tflite", "onnx"):
        _check_framework(model, x_train, x_test, digits, target, tmp_path, source_acc)
