"""Bias correction removes the per-channel output shift that int8 weights plant when the
layer's inputs have a large mean (issue 18)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.int8 import choose_recipe
from edgepack.converters.int8.bias_correction import correct_biases
from edgepack.converters.int8.quantize import Calibrated


def _model(seed: int, conv_bias: bool) -> bytes:
    """Conv (3x3, 8 ch, inputs with mean ~5) -> Relu -> Flatten -> Gemm(10): a planted shift:
    weight rounding error times a large input mean."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.2
    w[:, :, 0, 0] += 0.777  # one large weight per channel coarsens the per-channel scale
    fc = rng.standard_normal((10, 8 * 6 * 6)).astype(np.float32) * 0.05
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    conv_inputs = ["x", "w"]
    if conv_bias:
        inits.append(numpy_helper.from_array(np.full(8, 0.1, np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="head", transB=1)]
    graph = helper.make_graph(
        nodes, "shifted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits,
        value_info=[helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 8, 6, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _conv_out(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    m = onnx.load_from_string(model)
    m.graph.output.append(onnx.ValueInfoProto(name="c"))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(["c"], {"x": x})[0]


@pytest.mark.parametrize("conv_bias", [True, False])
def test_bias_correction_removes_a_planted_per_channel_shift(conv_bias):
    rng = np.random.default_rng(0)
    calib = (5.0 + rng.standard_normal((128, 4, 8, 8))).astype(np.float32)
    held = (5.0 + rng.standard_normal((128, 4, 8, 8))).astype(np.float32)
    float_model = _model(1, conv_bias)
    recipe = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)
    with Calibrated(float_model, {"x": calib}) as calibrated:
        plain = calibrated.quantize(recipe)
    corrected = correct_biases(float_model, plain, {"x": calib})
    assert [c.node for c in corrected.layers] == ["conv", "head"]
    with Calibrated(corrected.model_bytes, {"x": calib}) as calibrated:
        fixed = calibrated.quantize(recipe)

    reference = _conv_out(float_model, held)
    shift_before = (_conv_out(plain, held) - reference).mean(axis=(0, 2, 3))
    shift_after = (_conv_out(fixed, held) - reference).mean(axis=(0, 2, 3))
    assert np.abs(shift_before).max() > 0.02           # the plant is real
    assert np.abs(shift_after).max() < 0.25 * np.abs(shift_before).max()
    # the float model itself changed only by the bias: same weights
    assert corrected.model_bytes != float_model


def test_a_model_without_quantized_layers_is_returned_unchanged():
    float_model = _model(1, True)
    corrected = correct_biases(float_model, float_model, {"x": np.ones((4, 4, 8, 8), np.float32)})
    assert corrected.model_bytes == float_model and corrected.layers == ()


def test_inspect_shows_the_methods_tried():
    from edgepack.cli.describe_quantization import quantization_lines
    lines = quantization_lines({"mode": "int8", "accuracy_aware": {
        "target_agreement": 0.99, "agreement_all_int8": 0.8, "agreement": 0.995, "met": True,
        "methods": [{"method": "bias_correction", "agreement_before": 0.8,
                     "agreement_after": 0.995, "kept": True}]}})
    assert "    bias_correction: agreement 0.8000 -> 0.9950, kept" in lines
