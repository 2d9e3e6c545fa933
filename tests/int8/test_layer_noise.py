"""One-pass sensitivity ranking (converters/int8/layer_noise.py): a planted bad layer ranks
first from one float run, without quantizing per layer; blocks split at branch points."""
from __future__ import annotations

import numpy as np
import pytest
from int8_models import conv_net
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.int8 import Calibrated, choose_recipe
from edgepack.converters.int8.layer_noise import blocks, layer_noise, weight_rounding_error
from edgepack.converters.int8.layer_search import rank_layers
from edgepack.converters.int8.scoring import Score

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)
NODES = [("conv_a", "Conv"), ("conv_b", "Conv"), ("head", "Gemm")]


def test_one_pass_ranks_the_planted_outlier_layers_first_without_quantizing(calib,
                                                                            monkeypatch):
    with Calibrated(conv_net(outlier=1000.0), {"x": calib}) as cal:
        cal.quantize(RECIPE)                      # the plain calibration, as the pass has it
        calls = []
        monkeypatch.setattr(Calibrated, "quantize", lambda *a, **k: calls.append(a))
        ranking = rank_layers(cal, RECIPE, None, Score(0.5, 1.0), NODES, "one_pass",
                              samples={"x": calib})
    assert calls == []                            # no quantization per layer
    assert [s.method for s in ranking] == ["one_pass"] * 3
    # the outlier tensor (conv_a's output) is quantized by its producer and its consumer
    assert {s.node for s in ranking[:2]} == {"conv_a", "conv_b"}
    assert ranking[-1].node == "head"
    assert ranking[1].impact > 100 * ranking[-1].impact


def test_without_the_outlier_no_layer_stands_out(calib):
    with Calibrated(conv_net(), {"x": calib}) as cal:
        cal.quantize(RECIPE)
        planted = layer_noise(cal.model_bytes, {"x": calib}, cal.ranges(),
                              [n for n, _ in NODES])
    with Calibrated(conv_net(outlier=1000.0), {"x": calib}) as cal:
        cal.quantize(RECIPE)
        bad = layer_noise(cal.model_bytes, {"x": calib}, cal.ranges(), [n for n, _ in NODES])
    # conv_a's output (after its fused ReLU) carries the planted range: 1000x coarser steps
    assert bad["conv_a"].tensors[-1] == "a_r" and bad["conv_b"].tensors[0] == "a_r"
    assert bad["conv_a"].output > 1000 * planted["conv_a"].output
    assert bad["conv_b"].inputs == pytest.approx(bad["conv_a"].output)
    assert bad["head"].total == pytest.approx(planted["head"].total, rel=0.05)


def test_weight_rounding_error_is_that_of_symmetric_per_channel_int8():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3))
    w[0] *= 50.0                                   # one wide channel
    per_channel = weight_rounding_error(w, 0, per_channel=True)
    per_tensor = weight_rounding_error(w, 0, per_channel=False)
    scale = np.abs(w.reshape(4, -1)).max(1).reshape(4, 1, 1, 1) / 127
    expected = np.sum((np.round(w / scale) * scale - w) ** 2) / np.sum(w ** 2)
    assert per_channel == pytest.approx(expected)
    assert per_tensor > per_channel                # the wide channel sets one coarse step


def _residual_model() -> bytes:
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for i in range(5):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((4, 4, 1, 1)) * 0.3).astype(np.float32), f"w{i}"))
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], name="stem"),
             helper.make_node("Relu", ["a"], ["a_r"], name="r0"),
             helper.make_node("Conv", ["a_r", "w1"], ["b"], name="expand"),
             helper.make_node("Relu", ["b"], ["b_r"], name="r1"),
             helper.make_node("Conv", ["b_r", "w2"], ["c"], name="project"),
             helper.make_node("Add", ["a_r", "c"], ["d"], name="add"),
             helper.make_node("Conv", ["d", "w3"], ["e"], name="next1"),
             helper.make_node("Conv", ["e", "w4"], ["y"], name="next2")]
    graph = helper.make_graph(
        nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_blocks_end_at_branch_points_joins_and_a_size_cap():
    names = ["stem", "expand", "project", "add", "next1", "next2"]
    # stem's output feeds the residual branch and the Add: a block ends there; the Add
    # ends the residual block
    assert blocks(_residual_model(), names) == [("stem",), ("expand", "project", "add"),
                                                ("next1", "next2")]
    assert blocks(_residual_model(), names, max_layers=2) == [
        ("stem",), ("expand", "project"), ("add",), ("next1", "next2")]
