"""The exact post-quantization rewrites for onnxruntime's fast int8 kernels (ort_fast_paths).

Each rewrite must change no output number: the rewritten model is compared with the
unrewritten one, to the bit, on held-out inputs.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from int8_models import run
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.int8 import Calibrated, Int8Options, quantize_int8, recipe_for
from edgepack.converters.int8.ort_fast_paths import (apply_fast_paths, global_pools,
                                                     pad_conv_channels)
from edgepack.runtime.errors import ConversionError


def stem_net(seed: int = 0, stem_channels: int = 3) -> bytes:
    """x[N,C,16,16] -> stem Conv (stride 2) -> Relu -> Conv 8->8 -> Relu -> ReduceMean(2,3)
    -> Reshape -> Gemm -> logits[N,5]: torch's MobileNet tail, opset 18 (axes as input)."""
    rng = np.random.default_rng(seed)
    arrays = {"w1": rng.standard_normal((8, stem_channels, 3, 3)) * 0.4,
              "b1": rng.standard_normal(8) * 0.1,
              "w2": rng.standard_normal((8, 8, 1, 1)) * 0.4, "b2": rng.standard_normal(8) * 0.1,
              "wg": rng.standard_normal((5, 8)) * 0.5, "bg": np.zeros(5)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    inits += [numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
              numpy_helper.from_array(np.array([-1, 8], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="stem", pads=[1] * 4,
                              strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="pointwise"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("ReduceMean", ["r2", "axes"], ["m"], name="mean", keepdims=1),
             helper.make_node("Reshape", ["m", "shape"], ["v"], name="view"),
             helper.make_node("Gemm", ["v", "wg", "bg"], ["logits"], name="head", transB=1)]
    graph = helper.make_graph(
        nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                      ["N", stem_channels, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _images(count: int, seed: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, channels, 16, 16)).astype(
        np.float32)


@pytest.fixture(scope="module")
def quantized() -> bytes:
    recipe = recipe_for("onnxruntime", "x86-vnni").with_overrides(pad_conv_channels=0,
                                                                  global_pool=False)
    with Calibrated(stem_net(), {"x": _images(32, seed=1)}) as cal:
        return cal.quantize(recipe)


def _ops(model_bytes: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(model_bytes).graph.node]


def test_stem_is_padded_to_four_channels_and_outputs_are_bit_identical(quantized):
    padded, done = pad_conv_channels(quantized, 4)
    assert [(d.node, d.channels, d.padded_to) for d in done] == [("stem", 3, 4)]
    graph = onnx.load_from_string(padded).graph
    onnx.checker.check_model(onnx.load_from_string(padded))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    stem = next(n for n in graph.node if n.name == "stem")
    weight_dq = next(n for n in graph.node if stem.input[1] in n.output)
    weight = inits[weight_dq.input[0]]
    assert weight.shape == (8, 4, 3, 3) and weight.dtype == np.int8
    assert not weight[:, 3].any()                        # the added channel has zero weights
    pad = next(n for n in graph.node if n.op_type == "Pad")
    assert inits[pad.input[1]].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    assert pad.input[2].endswith("zero_point")           # pads with the activation's zero point
    # The 8-channel pointwise conv already fits the kernels' alignment: left alone.
    assert _ops(padded).count("Pad") == 1
    x = _images(64, seed=2)
    assert np.array_equal(run(padded, x), run(quantized, x))


def test_spatial_mean_becomes_a_global_pool_with_the_same_outputs(quantized):
    pooled, names = global_pools(quantized)
    assert names == ("mean",)
    ops = _ops(pooled)
    assert "ReduceMean" not in ops and ops.count("GlobalAveragePool") == 1
    graph = onnx.load_from_string(pooled).graph
    assert "axes" not in {i.name for i in graph.initializer}   # its axes input is gone
    pool = next(n for n in graph.node if n.op_type == "GlobalAveragePool")
    (q,) = [n for n in graph.node if pool.output[0] in n.input]
    assert q.op_type == "QuantizeLinear"    # a Q/DQ pair of its own, so the pool is fused
    x = _images(64, seed=3)
    np.testing.assert_allclose(run(pooled, x), run(quantized, x), rtol=0, atol=1e-6)


def test_nothing_to_do_returns_the_model_unchanged():
    recipe = recipe_for("onnxruntime", "x86-vnni").with_overrides(pad_conv_channels=0,
                                                                  global_pool=False)
    with Calibrated(stem_net(stem_channels=4), {"x": _images(16, 1, channels=4)}) as cal:
        four = cal.quantize(recipe)
    assert pad_conv_channels(four, 4) == (four, ())        # already a multiple of 4
    assert pad_conv_channels(four, 1) == (four, ())        # padding off
    with Calibrated(stem_net(), {"x": _images(16, 1)}) as cal:
        asymmetric = cal.quantize(recipe.with_overrides(weight_type="uint8"))
    assert pad_conv_channels(asymmetric, 4)[1] == ()       # uint8 weights: not the sym kernel
    float_model = stem_net()
    assert pad_conv_channels(float_model, 4) == (float_model, ())   # no QDQ: nothing matches
    assert global_pools(float_model) == (float_model, ())


def test_recipe_drives_the_rewrites_and_the_manifest_records_them():
    calibration = {"x": _images(32, seed=1)}
    vnni = recipe_for("onnxruntime", "x86-vnni")
    assert (vnni.pad_conv_channels, vnni.global_pool) == (4, True)
    result = quantize_int8(stem_net(), calibration, Int8Options(recipe=vnni))
    assert result.record["fast_paths"] == {
        "padded_convs": [{"node": "stem", "channels": 3, "padded_to": 4}],
        "global_pools": ["mean"]}
    assert result.record["recipe"]["pad_conv_channels"] == 4
    plain = quantize_int8(stem_net(), calibration, Int8Options(
        recipe=vnni, recipe_overrides=(("pad_conv_channels", 0), ("global_pool", False))))
    assert "fast_paths" not in plain.record
    x = _images(64, seed=4)
    np.testing.assert_allclose(run(result.model_bytes, x), run(plain.model_bytes, x),
                               rtol=0, atol=1e-6)
    # Rewrites are for onnxruntime QDQ graphs only; other recipes keep their model as is.
    qoperator = vnni.with_overrides(quant_format="qoperator")
    assert apply_fast_paths(plain.model_bytes, qoperator) == (plain.model_bytes, {})
    with pytest.raises(ConversionError, match="pad_conv_channels must be an integer >= 0"):
        vnni.with_overrides(pad_conv_channels=-4)
