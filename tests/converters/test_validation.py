"""Validation numbers, the never-pass cases, tolerance failures and --accept."""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.converters import ConversionConfig, QuantizationConfig, Tolerances, convert_model
from edgepack.converters.validation import format_table, output_stats, raise_if_failed
from edgepack.runtime import read_bundle
from edgepack.runtime.errors import ValidationError

from tiny_models import make_torch_cnn


def test_output_stats_numbers():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    got = np.array([[0.9, 0.0, 0.1], [0.0, 2.0, 0.0]])
    s = output_stats(ref, got)
    assert s["max_abs"] == pytest.approx(0.1)
    assert s["mean_abs"] == pytest.approx(0.2 / 6)
    assert s["rel_error"] == pytest.approx(0.05)
    cos = (0.9 + 4.0) / (np.sqrt(5.0) * np.sqrt(0.81 + 0.01 + 4.0))
    assert s["cosine"] == pytest.approx(cos)
    assert s["top1_agreement"] == 1.0 and s["finite"] and not s["constant"]


def test_nan_and_constant_outputs_never_pass_even_accepted():
    ref = np.random.default_rng(0).standard_normal((8, 4))
    nan = ref.copy()
    nan[3, 1] = np.nan
    assert output_stats(ref, nan)["nonfinite"] == 1
    const = np.tile(ref[:1], (8, 1))
    assert output_stats(ref, const)["constant"] is True
    report = {"fatal": ["y: the same output for every sample"], "failures": []}
    with pytest.raises(ValidationError, match="broken, not just inaccurate"):
        raise_if_failed(report, accept=True)


def test_tight_tolerance_fails_with_numbers_and_writes_nothing(tmp_path, nchw_data):
    pytest.importorskip("torch")
    tight = Tolerances.for_mode("fp16", max_rel_error=1e-9)
    cfg = ConversionConfig(quantization=QuantizationConfig(mode="fp16"), tolerances=tight)
    out = tmp_path / "o.edgepack"
    with pytest.raises(ValidationError) as e:
        convert_model(make_torch_cnn(), out, cfg, example_inputs=nchw_data[:1],
                      validation_data=nchw_data[:64])
    report = e.value.report
    (stats,) = report["outputs"].values()
    assert 0 < stats["rel_error"] < 5e-3  # the real fp16 error, carried by the exception
    assert report["passed"] is False and "relative max error" in report["failures"][0]
    assert not out.exists()
    # Accepting keeps the bundle and records that it was accepted.
    accepted = convert_model(make_torch_cnn(), out, cfg.with_changes(accept=True),
                             example_inputs=nchw_data[:1], validation_data=nchw_data[:64])
    validation = read_bundle(accepted.path).manifest.validation
    assert validation["accepted"] is True and validation["passed"] is False


def test_task_metric_and_max_drop(tmp_path, torch_cnn, nchw_data):
    from tiny_models import teacher_labels
    labels = teacher_labels(nchw_data)
    cfg = ConversionConfig(quantization=QuantizationConfig(mode="int8"))
    result = convert_model(torch_cnn, tmp_path / "o.edgepack", cfg, example_inputs=nchw_data[:1],
                           calibration_data=nchw_data[:256], validation_data=nchw_data[256:],
                           validation_labels=labels[256:])
    task = result.validation["task"]
    import torch
    with torch.no_grad():
        source_acc = float((torch_cnn(torch.from_numpy(nchw_data[256:])).argmax(1).numpy()
                            == labels[256:]).mean())
    assert task["source"] == pytest.approx(source_acc)
    assert task["drop_points"] == pytest.approx((task["source"] - task["bundle"]) * 100)
    assert task["drop_points"] <= 1.5
    assert "accuracy: source" in format_table(result.validation)


def test_random_validation_when_no_data(tmp_path):
    pytest.importorskip("torch")
    result = convert_model(make_torch_cnn(), tmp_path / "o.edgepack", ConversionConfig(),
                           input_shapes=[(1, 1, 8, 8)])
    assert result.validation["data"] == "random" and result.validation["samples"] == 64


def test_calibration_tail_is_held_out(tmp_path, nchw_data):
    pytest.importorskip("torch")
    cfg = ConversionConfig(quantization=QuantizationConfig(mode="int8"))
    result = convert_model(make_torch_cnn(), tmp_path / "o.edgepack", cfg,
                           example_inputs=nchw_data[:1], calibration_data=nchw_data[:100])
    assert result.validation["data"] == "calibration split"
    assert result.validation["samples"] == 20
    assert result.quantization["calibration"]["samples"] == 80
