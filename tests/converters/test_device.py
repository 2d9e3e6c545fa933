"""--device: the profile's refusals stop a conversion before any work; its defaults apply."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("edgepack.devices")

from edgepack.conversion import convert  # noqa: E402
from edgepack.runtime import read_bundle  # noqa: E402
from edgepack.runtime.errors import DeviceError  # noqa: E402

from tiny_models import mlp_bytes  # noqa: E402


def test_device_without_onnx_engine_refuses_before_loading(tmp_path):
    # The source does not exist: the refusal must come first.
    with pytest.raises(DeviceError, match="generic-armv7l .* has no onnx engine.*--target tflite"):
        convert(str(tmp_path / "missing.onnx"), tmp_path / "o.edgepack", target="onnx",
                device="generic-armv7l")


def test_unknown_device_is_a_device_error(tmp_path):
    with pytest.raises(DeviceError):
        convert(str(tmp_path / "m.onnx"), tmp_path / "o.edgepack", device="no-such-board")


def test_device_defaults_fill_unset_options(tmp_path):
    (tmp_path / "m.onnx").write_bytes(mlp_bytes())
    x = np.random.default_rng(0).uniform(-1, 1, (100, 64)).astype(np.float32)
    # rpi4b recommends onnx + int8: int8 then needs calibration data, like any int8.
    result = convert(str(tmp_path / "m.onnx"), tmp_path / "o.edgepack", device="rpi4b",
                     calibration_data=x)
    manifest = read_bundle(result.path).manifest
    assert manifest.model.engine == "onnxruntime" and manifest.quantization["mode"] == "int8"
    # An explicit choice wins over the recommendation.
    result = convert(str(tmp_path / "m.onnx"), tmp_path / "p.edgepack", device="rpi4b",
                     quantize="fp16")
    assert read_bundle(result.path).manifest.quantization["mode"] == "fp16"
