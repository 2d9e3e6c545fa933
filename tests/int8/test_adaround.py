"""Learned rounding (AdaRound-style) lowers a layer's output error below round-to-nearest on
held-out inputs, with weights already on the quantizer's int8 grid (issue 18)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.int8 import choose_recipe
from edgepack.converters.int8.adaround import AdaRoundSettings, learn_rounding, weight_grids
from edgepack.converters.int8.quantize import Calibrated

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)


def _inputs(count: int, seed: int) -> np.ndarray:
    """Strongly correlated features (a few latent factors plus a mean): where rounding
    errors of neighbouring weights can cancel."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).standard_normal((4, 32))
    z = rng.standard_normal((count, 4))
    return (0.5 + z @ mix + 0.05 * rng.standard_normal((count, 32))).astype(np.float32)


def _layer(conv: bool) -> bytes:
    rng = np.random.default_rng(5)
    if conv:
        w = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="layer", pads=[1] * 4)
        shape_in, shape_out, bias = ["N", 2, 4, 4], ["N", 8, 4, 4], 8
    else:
        w = rng.standard_normal((16, 32)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="layer", transB=1)
        shape_in, shape_out, bias = ["N", 32], ["N", 16], 16
    graph = helper.make_graph(
        [node], "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(bias, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _dequantized(quantized: bytes) -> np.ndarray:
    graph = onnx.load_from_string(quantized).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    scale, zero, _, _ = weight_grids(quantized)["layer"]
    q = next(v for k, v in inits.items() if np.issubdtype(v.dtype, np.integer) and v.ndim >= 2)
    shape = (-1,) + (1,) * (q.ndim - 1)
    return (q.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)


def _weight_error(w_q: np.ndarray, w: np.ndarray, x: np.ndarray, conv: bool) -> float:
    """||(W_q - W) x||^2 / ||W x||^2 on inputs x, in float (the layer's own rounding error)."""
    import onnxruntime as ort
    def out(weights):
        m = onnx.load_from_string(_layer(conv))
        m.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights.astype(np.float32), "w"))
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {"x": x})[0].astype(np.float64)
    ref = out(w)
    return float(np.sum((out(w_q) - ref) ** 2) / np.sum(ref ** 2))


def _check(conv: bool, calib: np.ndarray, held: np.ndarray) -> tuple[float, float]:
    float_model = _layer(conv)
    w = numpy_helper.to_array(onnx.load_from_string(float_model).graph.initializer[0])
    with Calibrated(float_model, {"x": calib}) as calibrated:
        nearest_model = calibrated.quantize(RECIPE)
    rounding = learn_rounding(float_model, nearest_model, {"x": calib}, ["layer"],
                              AdaRoundSettings(iterations=300, samples=256))
    assert [r.node for r in rounding.layers] == ["layer"]
    layer = rounding.layers[0]
    assert layer.flipped > 0 and layer.error_learned < layer.error_nearest
    learned_model = rounding.apply(float_model)
    with Calibrated(learned_model, {"x": calib}) as calibrated:
        requantized = calibrated.quantize(RECIPE)
    # on the grid: quantizing the learned weights again gives them back exactly
    np.testing.assert_allclose(_dequantized(requantized), layer.weight, rtol=0, atol=1e-6)
    before = _weight_error(_dequantized(nearest_model), w, held, conv)
    after = _weight_error(_dequantized(requantized), w, held, conv)
    return before, after


def test_adaround_lowers_gemm_output_error_on_held_out_inputs():
    before, after = _check(False, _inputs(256, 1), _inputs(256, 2))
    assert after < 0.8 * before, (before, after)


def test_adaround_lowers_conv_output_error_on_held_out_inputs():
    def images(count, seed):
        rng = np.random.default_rng(seed)
        base = rng.uniform(0, 1, (count, 2, 2, 2))
        return np.repeat(np.repeat(base, 2, 2), 2, 3).astype(np.float32)
    before, after = _check(True, images(256, 1), images(256, 2))
    assert after < 0.8 * before, (before, after)


def test_adaround_skips_layers_over_the_budget():
    float_model = _layer(False)
    calib = _inputs(64, 1)
    with Calibrated(float_model, {"x": calib}) as calibrated:
        nearest_model = calibrated.quantize(RECIPE)
    rounding = learn_rounding(float_model, nearest_model, {"x": calib}, ["layer"],
                              AdaRoundSettings(max_weights=100))
    assert rounding.layers == () and rounding.apply(float_model) == float_model


def test_accuracy_aware_tries_learned_rounding_on_the_worst_layers(calib):
    from edgepack.converters.int8 import AccuracyTarget, accuracy_aware
    from int8_models import conv_net
    with Calibrated(conv_net(seed=0, outlier=30.0), {"x": calib}) as calibrated:
        mixed = accuracy_aware(calibrated, RECIPE, {"x": calib}, AccuracyTarget(0.999))
    methods = mixed.to_record()["methods"]
    assert [m["method"] for m in methods] == ["bias_correction", "adaround"]
    learned = methods[1]
    assert learned["layers"] and all(r["error_learned"] < r["error_nearest"]
                                     for r in learned["layers"])
    # fitted on part of the calibration samples, judged on the rest (selection.FittedSplit)
    assert learned["decided_on"] == "67 held-back calibration samples (fitted on 133)"
    # kept only when the mix is better there by the noise-aware rule (ptq_better): a
    # significant agreement gain, or within its noise a significantly lower divergence
    if "agreement differs" in learned["decided_by"]:
        assert learned["kept"] is (learned["decide_agreement_after"] >
                                   learned["decide_agreement_before"])
    else:
        assert learned["kept"] is (": significant)" in learned["decided_by"] and
                                   learned["divergence_after"] < learned["divergence_before"])
