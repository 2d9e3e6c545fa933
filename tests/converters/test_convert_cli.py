"""`edgepack convert` through click: table output, JSON, one-line errors with exit codes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

from edgepack.cli.main import cli  # noqa: E402
from edgepack.runtime import read_bundle  # noqa: E402

from tiny_models import mlp_bytes  # noqa: E402


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "m.onnx").write_bytes(mlp_bytes())
    x = np.random.default_rng(0).uniform(-1, 1, (120, 64)).astype(np.float32)
    np.save(tmp_path / "cal.npy", x[:100])
    np.savez(tmp_path / "val.npz", x=x[100:], labels=np.arange(20) % 10)
    return tmp_path


def test_convert_int8_prints_table_and_writes_bundle(files):
    out = files / "m.edgepack"
    result = CliRunner().invoke(cli, [
        "convert", str(files / "m.onnx"), "-o", str(out), "-q", "int8",
        "--calibration-data", str(files / "cal.npy"), "--validation-data", str(files / "val.npz"),
        "--max-drop", "100", "--name", "mlp"])
    assert result.exit_code == 0, result.output
    assert "cosine" in result.output and "PASSED" in result.output
    assert "accuracy: source" in result.output
    manifest = read_bundle(out).manifest
    assert manifest.name == "mlp" and manifest.quantization["mode"] == "int8"
    assert manifest.validation["samples"] == 20
    (stats,) = manifest.validation["outputs"].values()
    assert stats["rel_error"] <= 0.1


def test_convert_json(files):
    out = files / "m.edgepack"
    result = CliRunner().invoke(cli, ["convert", str(files / "m.onnx"), "-o", str(out), "-q",
                                      "fp16", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["quantization"]["mode"] == "fp16" and data["validation"]["passed"] is True


def test_int8_without_data_is_one_line_exit_6(files):
    result = CliRunner().invoke(cli, ["convert", str(files / "m.onnx"), "-o",
                                      str(files / "o.edgepack"), "-q", "int8"])
    assert result.exit_code == 6
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == ["error: int8 quantization needs calibration data (a .npy/.npz file, an "
                     "image folder or an iterable of samples); pass calibration_data / "
                     "--calibration-data"]
    assert "Traceback" not in result.output


def test_bad_shape_option(files):
    result = CliRunner().invoke(cli, ["convert", str(files / "m.onnx"), "-o",
                                      str(files / "o.edgepack"), "--input-shape", "1,a,3"])
    assert result.exit_code == 2 and "is not a shape like 1,3,224,224" in result.output


def test_progress_stages_and_calibration_bar(files):
    result = CliRunner().invoke(cli, [
        "convert", str(files / "m.onnx"), "-o", str(files / "p.edgepack"), "-q", "int8",
        "--calibration-data", str(files / "cal.npy")])
    assert result.exit_code == 0, result.output
    # CliRunner mixes stderr into output: stage lines and the finished calibration bar.
    assert "convert ..." in result.output and "validate ..." in result.output
    assert "calibrate" in result.output and "100%" in result.output
