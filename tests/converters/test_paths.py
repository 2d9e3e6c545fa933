"""Every conversion path x every quantization mode it supports, on tiny models.

Per mode, the stated tolerances (relative max error = max|src-bundle| / max|src| over the
held-out samples, and cosine) and the size ratio against the fp32 bundle of the same path:
    none     rel <= 1e-5,  cosine >= 0.999999
    fp16     rel <= 5e-3,  cosine >= 0.99999,  model <= 0.6 x fp32
    dynamic  rel <= 0.05,  cosine >= 0.999,    model <= 0.8 x fp32
    int8     rel <= 0.2,   cosine >= 0.99,     model <= 0.45 x fp32 (tiny model: graph
             overhead weighs more than on real models; the digits e2e asserts <= 30%)
"""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.converters import ConversionConfig, QuantizationConfig, convert_model
from edgepack.runtime import load, read_bundle

LIMITS = {
    "none": dict(rel=1e-5, cos=0.999999, size=1.0),
    "fp16": dict(rel=5e-3, cos=0.99999, size=0.6),
    "dynamic": dict(rel=0.05, cos=0.999, size=0.8),
    "int8": dict(rel=0.2, cos=0.99, size=0.45),
}


def _convert_all_modes(source, target, tmp_path, data, **kwargs):
    sizes, reports = {}, {}
    for mode in LIMITS:
        cfg = ConversionConfig(target=target, quantization=QuantizationConfig(mode=mode),
                               name=f"t-{mode}")
        result = convert_model(source, tmp_path / f"{mode}.edgepack", cfg,
                               calibration_data=data[:256], validation_data=data[256:],
                               **kwargs)
        sizes[mode], reports[mode] = result.model_bytes, result.validation
        manifest = read_bundle(result.path).manifest
        assert manifest.validation["passed"] is True
        assert manifest.validation["samples"] == len(data) - 256
        if mode == "none":
            assert manifest.quantization is None
        else:
            assert manifest.quantization["mode"] == mode
    for mode, limit in LIMITS.items():
        (stats,) = reports[mode]["outputs"].values()
        assert stats["rel_error"] <= limit["rel"], (mode, stats)
        assert stats["cosine"] >= limit["cos"], (mode, stats)
        assert stats["finite"] and not stats["constant"], (mode, stats)
        assert sizes[mode] <= limit["size"] * sizes["none"], (mode, sizes)
    return sizes, reports


def test_pytorch_to_onnx_every_mode(torch_cnn, nchw_data, tmp_path):
    sizes, _ = _convert_all_modes(torch_cnn, "onnx", tmp_path, nchw_data,
                                  example_inputs=nchw_data[:1])
    manifest = read_bundle(tmp_path / "none.edgepack").manifest
    assert manifest.model.opset == 18
    assert manifest.inputs[0].shape == (-1, 1, 8, 8)  # dynamic batch exported
    assert manifest.inputs[0].layout == "NCHW"
    assert manifest.source["converter"] == "torch.onnx"
    # One self-contained file: the model member holds the weights (no external .data).
    assert sizes["none"] > 4 * (16 * 64 * 10)


def test_keras_to_tflite_every_mode(keras_cnn, nhwc_data, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="edgepack.converters.int8.recipes"):
        _convert_all_modes(keras_cnn, "tflite", tmp_path, nhwc_data)
    manifest = read_bundle(tmp_path / "int8.edgepack").manifest
    assert manifest.model.engine == "litert"
    assert manifest.inputs[0].layout == "NHWC"
    # Dynamic was asked for explicitly on a model of 2 convs and 1 dense layer: kept, warned.
    warnings = [r.getMessage() for r in caplog.records if "dynamic int8" in r.getMessage()]
    assert len(warnings) == 1 and "2 convolutions" in warnings[0], warnings


def test_keras_to_onnx_every_mode(keras_cnn, nhwc_data, tmp_path):
    _convert_all_modes(keras_cnn, "onnx", tmp_path, nhwc_data)
    manifest = read_bundle(tmp_path / "none.edgepack").manifest
    assert manifest.source["converter"] == "tf2onnx"
    assert [s.name for s in manifest.inputs] == ["image"]


def test_onnx_to_onnx_every_mode(torch_cnn, nchw_data, tmp_path):
    import io
    import torch
    buffer = io.BytesIO()
    torch.onnx.export(torch_cnn, (torch.from_numpy(nchw_data[:1]),), buffer, dynamo=False,
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    path = tmp_path / "float.onnx"
    path.write_bytes(buffer.getvalue())
    _convert_all_modes(str(path), "onnx", tmp_path, nchw_data)


def test_tflite_wrap_keeps_bytes(keras_cnn, nhwc_data, tmp_path):
    cfg = ConversionConfig(target="tflite")
    first = convert_model(keras_cnn, tmp_path / "a.edgepack", cfg, validation_data=nhwc_data[:32])
    model_bytes = read_bundle(first.path).model_bytes()
    src = tmp_path / "m.tflite"
    src.write_bytes(model_bytes)
    wrapped = convert_model(str(src), tmp_path / "b.edgepack", cfg,
                            validation_data=nhwc_data[:32])
    assert read_bundle(wrapped.path).model_bytes() == model_bytes
    (stats,) = wrapped.validation["outputs"].values()
    assert stats["max_abs"] == 0.0


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_int8_io_bundles_take_int8(keras_cnn, nhwc_data, tmp_path, target):
    """int8 I/O: the bundle's specs are int8 with scale/zero point, and predict() through
    the runtime (which quantizes/dequantizes with them) stays within int8 tolerance."""
    cfg = ConversionConfig(target=target,
                           quantization=QuantizationConfig(mode="int8", int8_io=True))
    result = convert_model(keras_cnn, tmp_path / "io.edgepack", cfg,
                           calibration_data=nhwc_data[:256], validation_data=nhwc_data[256:])
    with load(result.path) as model:
        (spec,) = model.inputs
        assert spec.dtype == "int8" and spec.quantization is not None
        assert model.outputs[0].dtype == "int8" and model.outputs[0].quantization is not None
    (stats,) = result.validation["outputs"].values()
    assert stats["cosine"] >= 0.99 and stats["rel_error"] <= 0.2, stats
    assert result.quantization["io"] == "int8"


def test_pytorch_int8_io_onnx(torch_cnn, nchw_data, tmp_path):
    cfg = ConversionConfig(target="onnx",
                           quantization=QuantizationConfig(mode="int8", int8_io=True))
    result = convert_model(torch_cnn, tmp_path / "io.edgepack", cfg, example_inputs=nchw_data[:1],
                           calibration_data=nchw_data[:256], validation_data=nchw_data[256:])
    manifest = read_bundle(result.path).manifest
    assert manifest.inputs[0].dtype == "int8" and manifest.outputs[0].dtype == "int8"
    (stats,) = result.validation["outputs"].values()
    assert stats["cosine"] >= 0.99 and stats["rel_error"] <= 0.2, stats


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_onnx_calibration_methods(torch_cnn, nchw_data, tmp_path, method):
    from edgepack.converters import CalibrationConfig
    cfg = ConversionConfig(target="onnx", quantization=QuantizationConfig(
        mode="int8", calibration=CalibrationConfig(method=method, samples=64)))
    result = convert_model(torch_cnn, tmp_path / "m.edgepack", cfg, example_inputs=nchw_data[:1],
                           calibration_data=nchw_data[:256], validation_data=nchw_data[256:])
    assert result.quantization["calibration"] == {
        "method": method, "samples": 64, **({"percentile": 99.999} if method == "percentile"
                                           else {})}
    (stats,) = result.validation["outputs"].values()
    assert stats["cosine"] >= 0.98, stats


def test_batch_of_five_runs_on_dynamic_batch_bundle(torch_cnn, nchw_data, tmp_path):
    import torch
    cfg = ConversionConfig(target="onnx")
    result = convert_model(torch_cnn, tmp_path / "m.edgepack", cfg, example_inputs=nchw_data[:1])
    with load(result.path) as model:
        (out,) = model.run({model.inputs[0].name: nchw_data[:5]}).values()
    with torch.no_grad():
        expected = torch_cnn(torch.from_numpy(nchw_data[:5])).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_image_folder_calibration_and_predict_on_raw_images(keras_cnn, nhwc_data, tmp_path):
    """Calibrate int8 from a folder of PNGs through the bundle's own preprocessing, then
    predict() on a raw image on the runtime matches the source's softmax within 0.05."""
    from PIL import Image
    from edgepack.runtime.ops import apply_steps
    steps = [{"op": "color", "to": "GRAY"}, {"op": "resize", "size": [8, 8]},
             {"op": "scale", "factor": 2 / 255}, {"op": "normalize", "mean": [1.0], "std": [1.0]}]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, sample in enumerate(nhwc_data[:120]):
        pixels = np.clip((sample[..., 0] + 1) * 127.5, 0, 255).astype(np.uint8)
        big = np.repeat(np.repeat(pixels, 2, 0), 2, 1)  # 16x16, resized back by the steps
        Image.fromarray(np.stack([big] * 3, -1)).save(folder / f"{i:03d}.png")
    cfg = ConversionConfig(target="tflite", quantization=QuantizationConfig(mode="int8"),
                           preprocess={"image": steps},
                           postprocess={"output": [{"op": "softmax"}]})
    result = convert_model(keras_cnn, tmp_path / "m.edgepack", cfg, calibration_data=folder)
    assert result.quantization["calibration"]["samples"] == 96  # 120 minus the held-out 20%
    raw = np.asarray(Image.open(folder / "000.png").convert("RGB"))
    with load(result.path) as model:
        (out,) = model.predict(raw).values()
    logits = np.asarray(keras_cnn(apply_steps(steps, raw)[None]), dtype=np.float64)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    # Keys were given by source names ("image", "output") and now sit on TFLite's names.
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(out - expected).max() <= 0.05, (out, expected)
