"""`convert --device` names what it chose, offers the modes that need no data when its int8
has none, and dynamic mode follows the device's int8 recipe (issue 12 item 22: rpi4b
dynamic recorded reduce_range true, 7-bit weights on an ARM target)."""
from __future__ import annotations

import json

from cli_helpers import invoke


def test_device_int8_without_data_offers_other_modes(cli_files):
    result = invoke("convert", "m.onnx", "-o", "o.edgepack", "--device", "rpi4b")
    assert result.exit_code == 6, result.output
    assert "converting m.onnx -> onnx (int8) (target and quantization from the rpi4b " \
           "profile) ..." in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert error == ["error: --device rpi4b recommends onnx int8, which needs calibration "
                     "data: pass --calibration-data (a .npy/.npz file or an image folder of "
                     "typical inputs), or choose -q dynamic or -q fp16 or -q none"]


def test_explicit_int8_keeps_the_plain_message(cli_files):
    result = invoke("convert", "m.onnx", "-o", "o.edgepack", "--device", "rpi4b", "-q", "int8")
    assert result.exit_code == 6 and "int8 quantization needs calibration data" in result.output


def test_dynamic_on_arm_uses_8_bit_weights(cli_files):
    result = invoke("convert", "m.onnx", "-o", "o.edgepack", "--device", "rpi4b", "-q",
                    "dynamic", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])["quantization"]
    assert record["mode"] == "dynamic" and record["reduce_range"] is False


def test_the_chosen_defaults_are_named(cli_files):
    result = invoke("convert", "m.onnx", "-o", "o.edgepack", "-q", "fp16")
    assert result.exit_code == 0, result.output
    assert "converting m.onnx -> onnx (fp16) (target from the default) ..." in result.output
    assert "default quantization" not in result.output
