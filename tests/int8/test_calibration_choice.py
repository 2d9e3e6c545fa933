"""Calibration method choice: on a planted heavy-tailed activation (one glitch value 60x the
tensor's spread in 1 of 128 samples, read by a near-zero weight) MinMax wastes the int8 range
on it and a clipping method (Percentile, Entropy) wins; the choice picks the candidate with the best measured score
(issue 18)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.int8 import AccuracyTarget, choose_recipe
from edgepack.converters.int8.calibration_choice import (choose_calibration, fake_quant,
                                                         prepare_calibrated)
from edgepack.converters.int8.quantize import CalibrationSettings
from edgepack.converters.int8.selection import best_of
from edgepack.converters.int8.scoring import AgreementMeter

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)
# One batch of all samples: the histogram calibrators then see the whole set at once.
SETTINGS = CalibrationSettings(percentile=99.9, batch=256)


def _model() -> bytes:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 32)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((10, 32)).astype(np.float32) * 0.2
    w2[:, 0] = 0.001          # the glitchy channel barely matters to the output
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1),
             helper.make_node("Gemm", ["u", "w2", "b"], ["z"], name="fc2", transB=1),
             helper.make_node("Add", ["y", "z"], ["logits"], name="add")]
    graph = helper.make_graph(
        nodes, "tails", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 32])
                         for n in ("x", "u")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _data(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((count, 32))
    u[::128, 0] = 200.0
    return {"x": rng.uniform(-1, 1, (count, 32)).astype(np.float32), "u": u.astype(np.float32)}


def test_choice_picks_percentile_for_a_heavy_tailed_activation():
    model, calib = _model(), _data(256, 1)
    meter = AgreementMeter("onnxruntime", model, calib)
    choice = choose_calibration(model, calib, RECIPE, meter, SETTINGS)
    try:
        scores = choice.scores
        assert {"minmax", "entropy", "percentile"} <= set(scores)
        best = best_of(scores)                       # the noise-aware rule (selection.py)
        assert choice.chosen == best and best in ("percentile", "entropy")   # clipping
        for clipping in ("percentile", "entropy"):
            assert scores[clipping].error < 0.1 * scores["minmax"].error, clipping
            assert scores[clipping].agreement > scores["minmax"].agreement + 0.05, clipping
        assert choice.per_tensor["u"] != "minmax"    # the glitchy tensor is clipped
        assert choice.calibrated.settings.method == best
        assert meter(choice.calibrated.quantize(RECIPE)) == scores[best]
    finally:
        choice.calibrated.close()


def test_fake_quant_matches_the_uint8_grid():
    x = np.array([-1.0, 0.0, 0.5, 3.0, 10.0])
    got = fake_quant(x, -1.0, 3.0, "uint8")
    scale = 4.0 / 255
    zero = np.round(1.0 / scale)                     # 64
    np.testing.assert_allclose(got, (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale)
    assert got[1] == 0.0 and got[-1] == (255 - zero) * scale     # 10 is clipped


def test_prepare_calibrated_records_the_choice_when_plain_int8_misses():
    model, calib = _model(), _data(256, 1)
    calibrated, records = prepare_calibrated(model, calib, RECIPE, SETTINGS,
                                             AccuracyTarget(0.99, samples=256), outputs=False,
                                             smoothing=False)
    try:
        assert [r["method"] for r in records] == ["calibration_choice"]   # no conv pairs
        record = records[0]
        assert record["kept"] is True and record["chosen"] in ("percentile", "entropy")
        assert record["agreement_after"] > record["agreement_before"]
        assert calibrated.settings.method == record["chosen"]
    finally:
        calibrated.close()
