"""Cross-layer equalization removes a planted range mismatch between consecutive convs
without changing the float function, and int8 gets closer to float (issue 18)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgepack.converters.int8 import choose_recipe
from edgepack.converters.int8.cle import equalize
from edgepack.converters.int8.quantize import Calibrated
from int8_models import conv_net, run


def _weights(model: bytes) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(model).graph.initializer}


def _int8_error(model: bytes, calib, held, reference) -> float:
    recipe = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)
    with Calibrated(model, {"x": calib}) as calibrated:
        quantized = calibrated.quantize(recipe)
    got = run(quantized, held)
    return float(np.sum((got - reference) ** 2) / np.sum(reference ** 2))


def test_cle_equalizes_a_planted_mismatch_keeping_float_outputs(calib, held_out):
    planted = conv_net(seed=3, outlier=100.0)   # conv_a channel 0 x100, conv_b's input /100
    result = equalize(planted)
    assert [(p.first, p.second, p.through) for p in result.pairs] == [("conv_a", "conv_b", "Relu")]
    pair = result.pairs[0]
    assert pair.range_ratio_before > 100 and pair.range_ratio_after < 1.01
    assert pair.max_scale > 10          # channel 0's weights were scaled down a lot

    w = _weights(result.model_bytes)
    r1 = np.abs(w["wa"]).reshape(8, -1).max(1)
    r2 = np.abs(w["wb"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-5)          # per-channel ranges match

    reference = run(planted, held_out)
    equalized = run(result.model_bytes, held_out)
    assert np.max(np.abs(equalized - reference)) <= 1e-5 * np.max(np.abs(reference))

    before = _int8_error(planted, calib, held_out, reference)
    after = _int8_error(result.model_bytes, calib, held_out, reference)
    assert after < 0.5 * before, (before, after)


def test_cle_leaves_relu6_pairs_and_plain_models_alone():
    model = onnx.load_from_string(conv_net(seed=3))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Clip"   # Clip(0, 6) does not commute with a per-channel scale
    relu.input.extend(["lo", "hi"])
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0, np.float32), "lo"),
                                    numpy_helper.from_array(np.array(6, np.float32), "hi")])
    clipped = model.SerializeToString()
    result = equalize(clipped)
    assert result.pairs == () and result.model_bytes == clipped


def test_accuracy_aware_conversion_tries_cle_first_and_keeps_it(calib):
    from edgepack.converters.int8 import AccuracyTarget, Int8Options, quantize_int8
    result = quantize_int8(conv_net(seed=3, outlier=100.0), {"x": calib}, Int8Options(
        device="x86_64-workstation", recipe_overrides=(("float_thin_convs", 0),),
        accuracy=AccuracyTarget(0.99)))
    aware = result.record["accuracy_aware"]
    # float outputs come first (no recalibration), then CLE; activation smoothing between
    # them finds no MatMul/Gemm input with outlier channels and says so
    tried = [m for m in aware["methods"] if "skipped" not in m]
    assert [m["method"] for m in tried][:2] == ["float_outputs", "cross_layer_equalization"]
    skipped = [m for m in aware["methods"] if "skipped" in m]
    assert [m["method"] for m in skipped] == ["activation_smoothing"]
    cle = tried[1]
    assert cle["kept"] is True
    assert cle["pairs"] == 1 and cle["agreement_after"] > cle["agreement_before"]
    # the manifest's all-int8 figure is the plain one, before any method
    assert aware["agreement_all_int8"] == aware["methods"][0]["agreement_before"]
    assert aware["met"] and aware["kept_float"] == []      # no layer had to stay float


def test_relaxed_cle_equalizes_through_relu6_as_relu(held_out):
    model = onnx.load_from_string(conv_net(seed=3, outlier=100.0))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Clip"
    relu.input.extend(["lo", "hi"])
    # a bound the planted model never reaches on these images: Relu and Clip agree here
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0, np.float32), "lo"),
                                    numpy_helper.from_array(np.array(1e4, np.float32), "hi")])
    clipped = model.SerializeToString()
    result = equalize(clipped, relax_clips=True)
    assert [(p.first, p.through) for p in result.pairs] == [("conv_a", "Clip")]
    ops = [n.op_type for n in onnx.load_from_string(result.model_bytes).graph.node]
    assert "Clip" not in ops and ops.count("Relu") == 2
    reference = run(clipped, held_out)
    assert np.max(np.abs(run(result.model_bytes, held_out) - reference)) <= \
        1e-5 * np.max(np.abs(reference))


def _clipped(bound: float) -> bytes:
    """conv_net with its first Relu a Clip(0, bound) (so only the relaxed variant pairs)."""
    model = onnx.load_from_string(conv_net(seed=3, outlier=100.0))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Clip"
    relu.input.extend(["lo", "hi"])
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0, np.float32), "lo"),
                                    numpy_helper.from_array(np.array(bound, np.float32), "hi")])
    return model.SerializeToString()


def test_the_relaxed_variant_is_not_quantized_when_its_float_model_already_loses(calib):
    from edgepack.converters.int8 import AccuracyTarget
    from edgepack.converters.int8.calibration_choice import prepare_calibrated
    from edgepack.converters.int8.quantize import CalibrationSettings
    recipe = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)

    def relaxed_record(bound: float) -> dict:
        calibrated, records = prepare_calibrated(
            _clipped(bound), {"x": calib}, recipe, CalibrationSettings(),
            AccuracyTarget(0.9999, samples=200), choice=False, outputs=False,
            smoothing=False)
        calibrated.close()
        return next(r for r in records
                    if r["method"] == "cross_layer_equalization_relu6_as_relu")
    # a bound never reached: ReLU and Clip agree, so the variant is quantized and judged
    assert "skipped" not in relaxed_record(1e4)
    # a bound most activations exceed: dropping it changes the float function itself
    clipping = relaxed_record(0.05)
    assert clipping["kept"] is False and "in float, scores below" in clipping["skipped"]
