"""Configs reject bad combinations up front; the registry names the known paths."""
from __future__ import annotations

import pytest

from edgepack.converters import (CalibrationConfig, ConversionConfig, QuantizationConfig,
                                 Tolerances, convert_model, get_converter, known_pairs)
from edgepack.converters.registry import check_mode
from edgepack.runtime.errors import ConversionError, EngineNotInstalledError


def test_known_pairs_cover_the_design_table():
    assert set(known_pairs()) == {("pytorch", "onnx"), ("pytorch", "tflite"),
                                  ("keras", "tflite"), ("keras", "onnx"), ("onnx", "onnx"),
                                  ("tflite", "tflite"), ("transformers", "onnx")}


def test_unknown_pair_lists_known_ones():
    with pytest.raises(ConversionError) as e:
        get_converter("onnx", "tflite")
    assert "no converter from 'onnx' to 'tflite'" in str(e.value)
    assert "pytorch->onnx" in str(e.value) and "keras->tflite" in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="int4"), "unknown quantization mode 'int4'"),
    (dict(mode="fp16", int8_io=True), "int8 model I/O needs quantization mode 'int8'"),
])
def test_quantization_config_rejects(kwargs, message):
    with pytest.raises(ConversionError, match=message):
        QuantizationConfig(**kwargs)


def test_calibration_config_rejects():
    with pytest.raises(ConversionError, match="unknown calibration method 'kl'"):
        CalibrationConfig(method="kl")
    with pytest.raises(ConversionError, match="positive integer"):
        CalibrationConfig(samples=0)


def test_tflite_refuses_histogram_calibration_before_work():
    q = QuantizationConfig(mode="int8", calibration=CalibrationConfig(method="entropy"))
    with pytest.raises(ConversionError, match="TFLite converter calibrates with min/max only"):
        ConversionConfig(target="tflite", quantization=q)


def test_conversion_config_rejects_target_and_opset():
    with pytest.raises(ConversionError, match="unknown target 'coreml'; use one of onnx, tflite"):
        ConversionConfig(target="coreml")
    with pytest.raises(ConversionError, match="opset"):
        ConversionConfig(opset=9)


def test_tolerances_defaults_and_override():
    t = Tolerances.for_mode("int8", max_drop=0.5)
    assert t.max_drop == 0.5 and t.min_cosine == 0.98
    assert Tolerances.for_mode("fp16").max_drop == 0.2
    with pytest.raises(ConversionError, match="max_drop must be in"):
        Tolerances.for_mode("none", max_drop=-1)


def test_wrapping_a_tflite_cannot_requantize(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    cfg = ConversionConfig(target="tflite", quantization=QuantizationConfig(mode="fp16"))
    with pytest.raises(ConversionError, match="tflite->tflite supports quantization none"):
        convert_model(str(model), tmp_path / "out.edgepack", cfg)
    assert not (tmp_path / "out.edgepack").exists()


def test_int8_without_calibration_data_fails_before_loading(tmp_path):
    cfg = ConversionConfig(target="onnx", quantization=QuantizationConfig(mode="int8"))
    # The source does not even exist: the refusal comes first.
    with pytest.raises(ConversionError, match="int8 quantization needs calibration data"):
        convert_model(str(tmp_path / "missing.onnx"), tmp_path / "o.edgepack", cfg)


def test_pytorch_to_tflite_names_the_missing_extra(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import sys
    for module in ("litert_torch", "ai_edge_torch"):  # as on a machine without the extra
        monkeypatch.setitem(sys.modules, module, None)
    model = torch.nn.Linear(4, 2)
    cfg = ConversionConfig(target="tflite")
    with pytest.raises(EngineNotInstalledError, match=r"edgepack\[convert-torch-tflite\]"):
        convert_model(model, tmp_path / "o.edgepack", cfg,
                      example_inputs=torch.zeros(1, 4).numpy())


def test_check_mode_passes_supported_modes():
    entry = get_converter("keras", "onnx")
    for mode in ("none", "fp16", "dynamic", "int8"):
        check_mode(entry, mode)


def test_importing_converters_pulls_no_framework():
    import subprocess
    import sys
    code = ("import sys, edgepack.converters, edgepack.converters.registry;"
            "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'onnx', 'onnxruntime', 'tf2onnx')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_converter_package_names_the_extra(tmp_path, monkeypatch, keras_cnn):
    import sys
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # makes `import tf2onnx` fail
    with pytest.raises(EngineNotInstalledError) as e:
        convert_model(keras_cnn, tmp_path / "o.edgepack", ConversionConfig(target="onnx"))
    assert "keras->onnx needs tf2onnx" in str(e.value)
    assert "pip install 'edgepack[convert]'" in str(e.value)
