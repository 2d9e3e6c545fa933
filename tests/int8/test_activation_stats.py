"""Calibration ranges and errors computed from one pass of histograms (activation_stats.py),
the public range API of Calibrated, and the automatic pass scoring each model once
(issue 18)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgepack.converters.int8 import AccuracyTarget, Int8Options, choose_recipe, quantize_int8
from edgepack.converters.int8.activation_stats import BINS, TensorHistogram
from edgepack.converters.int8.calibration_choice import fake_quant
from edgepack.converters.int8.quantize import Calibrated, CalibrationSettings
from int8_models import conv_net

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)


def _histogram(x: np.ndarray) -> TensorHistogram:
    """The histogram collect_histograms builds, for samples x [n, m]."""
    low, high = float(x.min()), float(x.max())
    counts, weighted, zeros = np.zeros(BINS), np.zeros(BINS), 0.0
    for row in x:
        energy = float(np.dot(row, row))
        nz = row[row != 0]
        zeros += (len(row) - len(nz)) / energy
        idx = np.clip(((nz - low) * (BINS / (high - low))).astype(np.int64), 0, BINS - 1)
        b = np.bincount(idx, minlength=BINS)
        counts += b
        weighted += b / energy
    return TensorHistogram(low, high, counts, weighted, zeros)


def _exact_error(x: np.ndarray, low: float, high: float) -> float:
    diff = fake_quant(x.astype(np.float64), low, high, "uint8") - x
    return float(np.sum(np.sum(diff ** 2, axis=1) / np.sum(x.astype(np.float64) ** 2, axis=1)))


@pytest.mark.parametrize("kind", ["relu", "signed"])
def test_histogram_error_matches_fake_quantization(kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4096)).astype(np.float32)
    if kind == "relu":
        x = np.maximum(x, 0)
    x[3, 7] = 40.0                       # one glitch value in one sample
    h = _histogram(x)
    for low, high in ((h.low, h.high), (h.low * 0.1, 4.0), (min(h.low, 0) * 0.5, 8.0)):
        exact = _exact_error(x, low, high)
        assert h.error(low, high, "uint8") == pytest.approx(exact, rel=0.1), (low, high)


def test_percentile_and_entropy_ranges():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 8192)).astype(np.float32)
    x[0, :4] = 60.0                                # a heavy tail
    h = _histogram(x)
    low, high = h.percentile_range(99.9)
    lo_ref, hi_ref = np.percentile(x, [0.05, 99.95])
    assert low == pytest.approx(lo_ref, abs=0.05) and high == pytest.approx(hi_ref, abs=0.05)
    e_low, e_high = h.entropy_range()
    assert e_high < 0.5 * h.high and e_low < 0 < e_high     # the tail is clipped
    bounded = _histogram(rng.uniform(0, 6, (16, 8192)).astype(np.float32))
    assert bounded.percentile_range(99.9)[0] == bounded.low            # one-sided
    assert bounded.entropy_range()[1] > 0.9 * bounded.high              # nothing to clip


def test_calibrated_ranges_round_trip(calib):
    model = conv_net(seed=1)
    with Calibrated(model, {"x": calib}) as measured:
        with pytest.raises(Exception, match="quantize once first"):
            measured.ranges()
        first = measured.quantize(RECIPE)
        ranges = measured.ranges()
        assert "a_r" in ranges and ranges["a_r"][0] == 0.0 < ranges["a_r"][1]
        with Calibrated.with_ranges(model, {"x": calib}, CalibrationSettings(), ranges) as given:
            assert given.calibrated and given.ranges() == ranges
            assert given.quantize(RECIPE) == first
        narrower = {**ranges, "a_r": (0.0, ranges["a_r"][1] / 2)}
        with Calibrated.with_ranges(model, {"x": calib}, CalibrationSettings(),
                                    narrower) as given:
            assert given.quantize(RECIPE) != first


@pytest.mark.slow
def test_automatic_pass_scores_each_model_once(calib, monkeypatch):
    """Plain int8 used to be converted and measured twice (prepare_calibrated, then
    accuracy_aware); no candidate model may be scored twice on the same samples (a fitted
    method's candidate and status quo are also scored on the held-back samples)."""
    from edgepack.converters.int8 import scoring
    from edgepack.converters.int8.quantize import samples_digest
    scored: list[tuple[str, str]] = []
    original = scoring.AgreementMeter.__call__

    def counting(self, model_bytes):
        scored.append((hashlib.sha256(model_bytes).hexdigest(), samples_digest(self.samples)))
        return original(self, model_bytes)

    monkeypatch.setattr(scoring.AgreementMeter, "__call__", counting)
    result = quantize_int8(conv_net(seed=0, outlier=30.0), {"x": calib}, Int8Options(
        recipe=RECIPE, accuracy=AccuracyTarget(0.999, max_float_layers=1)))
    methods = [m["method"] for m in result.record["accuracy_aware"]["methods"]]
    assert "calibration_choice" in methods and "bias_correction" in methods
    assert len(scored) == len(set(scored)), len(scored) - len(set(scored))
