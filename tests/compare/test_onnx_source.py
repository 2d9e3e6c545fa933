"""compare end to end on a tiny ONNX source (no torch/tensorflow): failed combinations are
rows with their reason, the CLI writes JSON/HTML/pick, and the numbers it prints are the
bundles' own."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1]))
import models  # noqa: E402

from edgepack.compare import CompareConfig, LatencyConfig, compare  # noqa: E402
from edgepack.runtime import read_bundle  # noqa: E402

pytest.importorskip("onnx")
QUICK = LatencyConfig(rounds=3, block=5, warmup=2)


@pytest.fixture(scope="module")
def onnx_source(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("src")
    model = root / "conv.onnx"
    model.write_bytes(models.onnx_conv_classifier(seed=0))
    rng = np.random.default_rng(0)
    data = root / "data.npz"
    np.savez(data, x=rng.uniform(-1, 1, (120, 3, 8, 8)).astype(np.float32))
    return model, data


def test_failures_are_rows_never_a_crash(onnx_source, tmp_path, monkeypatch):
    import edgepack.converters as converters
    real = converters.convert_model

    def flaky(source, out, config, **kwargs):
        if config.target == "onnx" and config.quantization.mode == "fp16":
            raise RuntimeError("boom in a converter")
        return real(source, out, config, **kwargs)

    monkeypatch.setattr(converters, "convert_model", flaky)
    model, data = onnx_source
    result = compare(str(model), data, CompareConfig(targets=("onnx", "tflite"),
                                                     modes=("none", "fp16", "int8"),
                                                     latency=QUICK, memory=False),
                     work_dir=tmp_path)
    assert [r.key for r in result.rows] == ["onnx/none", "onnx/fp16", "onnx/int8",
                                            "tflite/none", "tflite/fp16", "tflite/int8"]
    by = {r.key: r for r in result.rows}
    assert by["onnx/fp16"].status == "failed"
    assert by["onnx/fp16"].reason == "unexpected: RuntimeError: boom in a converter"
    for mode in ("none", "fp16", "int8"):
        reason = by[f"tflite/{mode}"].reason
        assert by[f"tflite/{mode}"].status == "failed" and "no converter" in reason, reason
    assert by["onnx/none"].measured and by["onnx/int8"].measured
    # No labels: the budget is top-1 agreement with the source.
    assert result.metric == "top1_agreement" and result.source_accuracy is None
    assert by["onnx/none"].accuracy.top1_agreement == 1.0
    assert by["onnx/none"].accuracy.drop_points == 0.0
    assert result.held_out == 36 and result.calibration == 84


def test_cli_json_html_and_pick(onnx_source, tmp_path):
    """--labels gives task accuracy; it must equal onnxruntime run directly on the bundle's
    model over the documented held-out split (last 30% of a seed-0 permutation)."""
    import onnxruntime as ort
    from edgepack.cli.main import cli
    model, data = onnx_source
    x = np.load(data)["x"]
    labels = np.random.default_rng(5).integers(0, 4, len(x))
    np.save(tmp_path / "labels.npy", labels)
    keep, html, pick = tmp_path / "bundles", tmp_path / "r.html", tmp_path / "pick.edgepack"
    args = ["compare", str(model), "--data", str(data), "--labels", str(tmp_path / "labels.npy"),
            "--targets", "onnx,tflite",
            "--modes", "none,int8", "--device", "rpi4b", "--rounds", "3", "--block", "5",
            "--max-drop", "5", "--keep", str(keep), "--html", str(html), "--pick", str(pick),
            "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = {r["key"]: r for r in report["rows"]}
    assert set(rows) == {"onnx/none", "onnx/int8", "tflite/none", "tflite/int8"}
    assert rows["tflite/int8"]["status"] == "failed"
    for key in ("onnx/none", "onnx/int8"):
        path = Path(rows[key]["path"])
        assert rows[key]["bundle_bytes"] == path.stat().st_size
        assert rows[key]["model_bytes"] == len(read_bundle(path).model_bytes())
        assert rows[key]["latency"]["runs"] == 15
        assert rows[key]["check"]["ok"] is True
    held = np.sort(np.random.default_rng(0).permutation(120)[120 - 36:])
    source = ort.InferenceSession(model.read_bytes()).run(None, {"x": x[held]})[0]
    assert report["metric"] == "accuracy" and report["held_out"] == 36
    assert report["source_accuracy"] == float(np.mean(source.argmax(1) == labels[held]))
    for key in ("onnx/none", "onnx/int8"):
        data_ = read_bundle(rows[key]["path"]).model_bytes()
        got = ort.InferenceSession(data_).run(None, {"x": x[held]})[0]
        assert rows[key]["accuracy"]["accuracy"] == float(np.mean(got.argmax(1) == labels[held]))
        assert rows[key]["accuracy"]["top1_agreement"] == float(
            np.mean(got.argmax(1) == source.argmax(1)))
    picked = report["pick"]["key"]
    assert picked in ("onnx/none", "onnx/int8")
    assert pick.read_bytes() == Path(rows[picked]["path"]).read_bytes()
    text = html.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 4
    assert len(text) < 300_000


def test_cli_errors_are_one_line(onnx_source, tmp_path):
    from edgepack.cli.main import cli
    model, data = onnx_source
    runner = CliRunner()
    bad_mode = runner.invoke(cli, ["compare", str(model), "--data", str(data), "--modes",
                                   "none,int4"])
    assert bad_mode.exit_code == 2 and "int4" in bad_mode.output
    on_device = runner.invoke(cli, ["compare", str(model), "--data", str(data), "--on-device"])
    assert on_device.exit_code != 0
    assert "--on-device needs --device" in on_device.output
    assert "Traceback" not in on_device.output
    unknown = runner.invoke(cli, ["compare", str(model), "--data", str(data), "--device",
                                  "toaster"])
    assert unknown.exit_code != 0 and "toaster" in unknown.output
    assert "Traceback" not in unknown.output
