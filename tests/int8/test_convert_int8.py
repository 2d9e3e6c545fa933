"""int8 through the converters' pipeline: recipe, kept-float layers and the speed verdict
reach the manifest and the validation table."""
from __future__ import annotations

import pytest
from int8_models import conv_net

from edgepack.converters import ConversionConfig, QuantizationConfig, convert_model
from edgepack.converters.validation import format_table
from edgepack.runtime import read_bundle
from edgepack.runtime.errors import ConversionError


def _onnx_file(tmp_path, model_bytes: bytes):
    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes)
    return path


def test_int8_bundle_records_recipe_and_speed(tmp_path, calib, held_out):
    cfg = ConversionConfig(quantization=QuantizationConfig(mode="int8"), device="rpi4b",
                           accept=True)
    result = convert_model(_onnx_file(tmp_path, conv_net()), tmp_path / "m.edgepack", cfg,
                           calibration_data=calib, validation_data=held_out)
    quant = read_bundle(result.path).manifest.quantization
    assert quant["mode"] == "int8" and quant["recipe"]["name"] == "ort-arm-neon"
    assert quant["recipe"]["types"] == "S8S8"
    # 7-bit weights when this (validating) host is x86 without VNNI, else 8-bit.
    from edgepack.converters.int8 import choose_recipe
    assert quant["reduce_range"] is choose_recipe("onnxruntime", "rpi4b").reduce_range
    assert quant["calibration"] == {"method": "minmax", "samples": 200}
    speed = quant["speed"]
    assert speed["points"][0]["threads"] == 1 and speed["points"][0]["fp32_ms"] > 0
    assert result.validation["speed"] == speed
    table = format_table(result.validation)
    assert "faster than fp32 here? " + ("yes" if speed["faster_than_fp32"] else "NO") in table
    assert "top1" in table.splitlines()[0]


def test_explicit_reduce_range_overrides_the_recipe(tmp_path, calib):
    cfg = ConversionConfig(quantization=QuantizationConfig(
        mode="int8", reduce_range=False, speed_check=False), device="rpi5", accept=True)
    result = convert_model(_onnx_file(tmp_path, conv_net()), tmp_path / "m.edgepack", cfg,
                           calibration_data=calib)
    assert result.quantization["reduce_range"] is False
    assert result.quantization["recipe"]["reduce_range"] is False
    assert result.quantization["recipe"]["name"].startswith("ort-arm-dotprod")
    assert "speed" not in result.quantization and "speed" not in result.validation


def test_accuracy_target_fixes_the_outlier_model(tmp_path, calib, held_out):
    model = conv_net(outlier=1000.0)
    cfg = ConversionConfig(quantization=QuantizationConfig(
        mode="int8", accuracy_target=0.97, speed_check=False), device="rpi4b")
    result = convert_model(_onnx_file(tmp_path, model), tmp_path / "m.edgepack", cfg,
                           calibration_data=calib, validation_data=held_out)
    quant = read_bundle(result.path).manifest.quantization
    # The planted x1000 channel is exactly what cross-layer equalization undoes (cle.py), so
    # the target is met with every layer int8; before CLE, conv_a and conv_b stayed float.
    # (Keeping layers float is covered by test_sensitivity.py.)
    methods = {m["method"]: m for m in quant["accuracy_aware"]["methods"]}
    assert methods["cross_layer_equalization"]["kept"] is True
    assert not {"conv_a", "conv_b"} & {k["node"] for k in quant["kept_float"]}
    assert quant["accuracy_aware"]["met"] and quant["accuracy_aware"]["agreement_all_int8"] < 0.5
    # Held-out agreement measured by the pipeline's validation (never seen by the pass).
    assert result.validation["top1_agreement"] >= 0.95


def test_plain_int8_of_the_outlier_model_fails_validation(tmp_path, calib, held_out):
    from edgepack.runtime.errors import ValidationError
    cfg = ConversionConfig(quantization=QuantizationConfig(mode="int8", speed_check=False),
                           device="rpi4b")
    # x1000 outliers crush the other channels to zero: the output collapses to a constant.
    with pytest.raises(ValidationError, match="top-1 agreement|the same output"):
        convert_model(_onnx_file(tmp_path, conv_net(outlier=1000.0)), tmp_path / "m.edgepack",
                      cfg, calibration_data=calib, validation_data=held_out)


def test_accuracy_target_is_checked_up_front():
    with pytest.raises(ConversionError, match="needs quantization mode 'int8'"):
        QuantizationConfig(mode="fp16", accuracy_target=0.99)
    with pytest.raises(ConversionError, match=r"\(0, 1\]"):
        QuantizationConfig(mode="int8", accuracy_target=99)


def test_cli_accuracy_target_and_speed_line(tmp_path, calib, held_out):
    import numpy as np
    from click.testing import CliRunner

    from edgepack.cli.main import cli
    np.save(tmp_path / "calib.npy", calib)
    np.save(tmp_path / "val.npy", held_out)
    out = tmp_path / "m.edgepack"
    result = CliRunner().invoke(cli, [
        "convert", str(_onnx_file(tmp_path, conv_net(outlier=1000.0))), "-o", str(out),
        "-q", "int8", "--device", "rpi4b", "--calibration-data", str(tmp_path / "calib.npy"),
        "--validation-data", str(tmp_path / "val.npy"), "--accuracy-target", "0.97"])
    assert result.exit_code == 0, result.output
    assert "faster than fp32 here?" in result.output
    quant = read_bundle(out).manifest.quantization
    # cross-layer equalization meets the target with no layer float (see above)
    assert quant["accuracy_aware"]["met"] and quant["kept_float"] == []
    bad = CliRunner().invoke(cli, ["convert", "x.onnx", "-o", "y", "--accuracy-target", "2"])
    assert bad.exit_code != 0 and "accuracy-target" in bad.output


def test_max_float_layers_and_reconstruct_are_checked_up_front():
    for extra, flag in (({"max_float_layers": 0}, "--max-float-layers"),
                        ({"reconstruction": True}, "--reconstruct")):
        with pytest.raises(ConversionError, match=f"{flag} steers .* add --accuracy-target"):
            QuantizationConfig(mode="int8", **extra)
    with pytest.raises(ConversionError, match="layer count >= 0"):
        QuantizationConfig(mode="int8", accuracy_target=0.9, max_float_layers=-1)
    config = QuantizationConfig(mode="int8", accuracy_target=0.9, reconstruction=True)
    with pytest.raises(ConversionError, match="ONNX target only"):
        config.int8_options("litert")
    options = config.int8_options("onnxruntime")
    assert options.accuracy.reconstruction is not None
    assert options.accuracy.max_float_layers == 8         # the default, unless given
    all_int8 = QuantizationConfig(mode="int8", accuracy_target=0.9, max_float_layers=0)
    assert all_int8.int8_options("onnxruntime").accuracy.max_float_layers == 0


def test_cli_every_layer_int8_with_reconstruction(tmp_path, calib, held_out):
    import numpy as np
    from click.testing import CliRunner

    from edgepack.cli.main import cli
    np.save(tmp_path / "calib.npy", calib)
    np.save(tmp_path / "val.npy", held_out)
    out = tmp_path / "m.edgepack"
    # a target no PTQ method reaches on this model: the pass tries all of them
    result = CliRunner().invoke(cli, [
        "convert", str(_onnx_file(tmp_path, conv_net(seed=1))), "-o", str(out), "-q", "int8",
        "--device", "rpi4b", "--calibration-data", str(tmp_path / "calib.npy"),
        "--validation-data", str(tmp_path / "val.npy"), "--accuracy-target", "0.9999",
        "--max-float-layers", "0", "--reconstruct", "--no-speed-check", "--accept"])
    assert result.exit_code == 0, result.output
    quant = read_bundle(out).manifest.quantization
    assert quant["kept_float"] == []                      # every layer int8
    methods = [m["method"] for m in quant["accuracy_aware"]["methods"]]
    assert "block_reconstruction" in methods, methods
    # the target was out of reach: the CLI says so, and names what is left to try
    assert not quant["accuracy_aware"]["met"]
    note = next(line for line in result.output.splitlines()
                if line.startswith("note: int8 accuracy target 0.9999 not met"))
    assert "--max-float-layers N" in note and "edgepack optimize qat" in note
    assert "--reconstruct" not in note                  # already used
    bad = CliRunner().invoke(cli, ["convert", "x.onnx", "-o", "y", "--reconstruct"])
    assert bad.exit_code == 6 and "add --accuracy-target" in bad.output


def test_the_hint_names_only_what_was_not_used():
    from edgepack.converters.pipeline import accuracy_hint
    unmet = {"accuracy_aware": {"target_agreement": 0.95, "agreement": 0.9424, "met": False,
                                "kept_float": [{"node": f"conv{i}"} for i in range(8)]}}
    plain = ConversionConfig(quantization=QuantizationConfig(mode="int8", accuracy_target=0.95))
    hint = accuracy_hint(unmet, plain)
    assert hint.startswith("int8 accuracy target 0.95 not met on the calibration samples: "
                           "agreement 0.9424 with 8 layer(s) float")
    assert "--reconstruct" in hint and "a --max-float-layers above 8" in hint
    tflite = ConversionConfig(target="tflite", quantization=plain.quantization)
    assert "--reconstruct" not in accuracy_hint(unmet, tflite)     # ONNX only
    met = {"accuracy_aware": {**unmet["accuracy_aware"], "met": True}}
    assert accuracy_hint(met, plain) is None and accuracy_hint(None, plain) is None
