"""check_bundle: each rule fires on the bundle that breaks it, and only there."""
import dataclasses
import json

import pytest
from click.testing import CliRunner

from edgepack.devices import check_bundle, load_profile
from edgepack.devices.tflite_limits import MAX_OP_VERSIONS


def codes(report, severity=None):
    return {f.code for f in report.findings if severity in (None, f.severity)}


def test_dynamic_range_tflite_is_refused_on_armv7l(bundles):
    report = check_bundle(bundles["tflite-dynamic"], "generic-armv7l")
    assert not report.ok
    err = next(f for f in report.findings if f.code == "OP_VERSION")
    assert err.severity == "error"
    assert "FULLY_CONNECTED version 12" in err.message and "highest it registers: 10" in err.message
    assert "-q int8 --calibration-data DATA" in err.fix
    assert report.estimates["quantization"] == "dynamic"


def test_dynamic_range_tflite_runs_on_aarch64_with_litert(bundles):
    report = check_bundle(bundles["tflite-dynamic"], "rpi4b")
    assert report.ok, report.findings
    assert report.estimates["engine"] == "ai-edge-litert"
    assert "ALT_ENGINE_OPS" in codes(report, "info")  # ...but not with tflite-runtime 2.14


def test_full_int8_tflite_passes_armv7l_with_a_per_channel_warning(bundles):
    report = check_bundle(bundles["tflite-int8"], "generic-armv7l")
    assert report.ok
    assert codes(report, "error") == set()
    assert "PER_CHANNEL_FC" in codes(report, "warning")
    per_tensor = check_bundle(bundles["tflite-int8_per_tensor"], "generic-armv7l")
    assert per_tensor.ok and "PER_CHANNEL_FC" not in codes(per_tensor)


def test_onnx_is_refused_on_armv7l(bundles):
    report = check_bundle(bundles["onnx-int8"], "generic-armv7l")
    assert not report.ok
    (err,) = report.by_severity("error")
    assert err.code == "ENGINE_UNAVAILABLE" and "armv7l" in err.message
    assert "convert to tflite" in err.fix


def test_int8_onnx_fits_a_pi4(bundles):
    report = check_bundle(bundles["onnx-int8"], "rpi4b")
    assert report.ok and codes(report, "error") == codes(report, "warning") == set()
    assert report.estimates["quantization"] == "int8"  # read from the manifest
    size = bundles["onnx-int8"].stat().st_size
    assert 0 < report.estimates["model_mb"] * 2**20 < size


def test_fp16_warns_without_fp16_arithmetic(bundles):
    on_pi4 = check_bundle(bundles["tflite-fp16"], "rpi4b")
    assert "FP16_NO_ARITH" in codes(on_pi4, "warning")
    on_pi5 = check_bundle(bundles["tflite-fp16"], "rpi5")
    assert "FP16_NO_ARITH" not in codes(on_pi5) and "FP16_OK" in codes(on_pi5, "info")


def test_int8_advice_on_dot_product_cores(bundles):
    report = check_bundle(bundles["tflite-none"], "rpi5")
    advice = next(f for f in report.findings if f.code == "ADVICE_INT8")
    assert "dot-product" in advice.message
    assert "ADVICE_INT8" not in codes(check_bundle(bundles["tflite-int8"], "rpi5"))


def test_ram_budget(bundles):
    report = check_bundle(bundles["tflite-none"], "rpi-zero2w")
    need = report.estimates["estimated_total_mb"]
    assert report.ok and need < report.estimates["ram_budget_mb"]
    # The same bundle on a board with less free RAM than it needs is refused, with numbers.
    tiny = dataclasses.replace(load_profile("rpi-zero2w"), ram_mb=int(need) + 20,
                               os_reserved_mb=30)
    refused = check_bundle(bundles["tflite-none"], tiny)
    err = next(f for f in refused.findings if f.code == "RAM")
    assert err.severity == "error" and f"{tiny.ram_budget_mb} MB" in err.message
    warned = dataclasses.replace(tiny, ram_mb=int(need * 1.5) + 30)
    assert "RAM" in codes(check_bundle(bundles["tflite-none"], warned), "warning")


def test_op_table_is_the_measured_one():
    table = MAX_OP_VERSIONS["2.14.0"]
    # Spot values measured with devices/gen_tflite_limits.py against tflite-runtime 2.14.0.
    assert table["FULLY_CONNECTED"] == 10
    assert table["CONV_2D"] == 7 and table["DEPTHWISE_CONV_2D"] == 7
    assert "STABLEHLO_ADD" not in table


def test_check_cli(bundles):
    from edgepack.cli.main import cli

    runner = CliRunner()
    bad = runner.invoke(cli, ["check", str(bundles["tflite-dynamic"]), "--device",
                              "generic-armv7l", "--json"])
    assert bad.exit_code == 1
    data = json.loads(bad.output)
    assert data["ok"] is False and data["findings"][0]["code"] == "OP_VERSION"
    good = runner.invoke(cli, ["check", str(bundles["tflite-int8"]), "-d", "generic-armv7l"])
    assert good.exit_code == 0 and "OK: it can run there" in good.output
    unknown = runner.invoke(cli, ["check", str(bundles["tflite-int8"]), "-d", "rpi9"])
    assert unknown.exit_code == 7 and "unknown device 'rpi9'" in unknown.output


def test_devices_cli():
    from edgepack.cli.main import cli

    runner = CliRunner()
    listing = runner.invoke(cli, ["devices"])
    assert listing.exit_code == 0 and len(listing.output.strip().splitlines()) == 1 + 8
    show = runner.invoke(cli, ["devices", "show", "rpi5", "--json"])
    assert json.loads(show.output)["core"] == "cortex-a76"
    doctor = runner.invoke(cli, ["doctor", "--json"])
    assert doctor.exit_code == 0 and json.loads(doctor.output)["closest_profile"]
