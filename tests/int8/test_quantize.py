"""Graph preparation and recipe-driven static quantization on tiny graphs."""
from __future__ import annotations

import numpy as np
import pytest
from int8_models import conv_net, images, run

from edgepack.converters.int8 import (CalibrationSettings, Calibrated, Int8Options,
                                      choose_recipe, quantize_int8)
from edgepack.converters.int8.graph_prep import op_counts, prepare_graph
from edgepack.runtime.errors import ConversionError


def _ops(model_bytes: bytes) -> dict[str, int]:
    import onnx
    counts: dict[str, int] = {}
    for node in onnx.load_from_string(model_bytes).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _dq_types(model_bytes: bytes) -> set[int]:
    """onnx element types of the integer tensors feeding DequantizeLinear."""
    import onnx
    model = onnx.load_from_string(model_bytes)
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return {inits[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits}


def _activation_types(model_bytes: bytes) -> set[int]:
    """onnx element types of the zero points of every QuantizeLinear (activations)."""
    import onnx
    graph = onnx.load_from_string(model_bytes).graph
    zero_points = {n.input[2] for n in graph.node if n.op_type == "QuantizeLinear"}
    return {i.data_type for i in graph.initializer if i.name in zero_points}


def test_graph_prep_fuses_batchnorm_and_keeps_the_function(calib):
    model = conv_net(batchnorm=True)
    prepared = prepare_graph(model)
    assert op_counts(model)["BatchNormalization"] == 1
    assert prepared.after["BatchNormalization"] == 0
    assert prepared.to_record()["batchnorm_fused"] == 1
    assert "graph_optimization" in prepared.steps
    np.testing.assert_allclose(run(prepared.model_bytes, calib), run(model, calib),
                               rtol=1e-4, atol=1e-4)


def test_graph_prep_falls_back_to_the_exported_model(monkeypatch, caplog):
    from onnxruntime.quantization import shape_inference

    calls = []

    def failing(src, dst, **options):
        calls.append(options)
        raise RuntimeError("symbolic shape inference cannot handle op Foo")

    monkeypatch.setattr(shape_inference, "quant_pre_process", failing)
    model = conv_net(batchnorm=True)
    with caplog.at_level("WARNING"):
        prepared = prepare_graph(model)
    assert prepared.model_bytes == model and prepared.steps == ()
    assert calls == [{}, {"skip_symbolic_shape": True}]   # retried without symbolic inference
    assert "as exported" in caplog.text and "cannot handle op Foo" in caplog.text


def test_recipe_types_end_up_in_the_model(calib):
    import onnx
    model = conv_net()
    x86 = quantize_int8(model, {"x": calib}, Int8Options(device="x86_64-workstation"))
    arm = quantize_int8(model, {"x": calib}, Int8Options(device="rpi4b"))
    # Weights are int8 (symmetric; biases int32) for both; activations follow the recipe.
    assert _dq_types(x86.model_bytes) == {onnx.TensorProto.INT8, onnx.TensorProto.INT32}
    assert _dq_types(arm.model_bytes) == {onnx.TensorProto.INT8, onnx.TensorProto.INT32}
    assert _activation_types(x86.model_bytes) == {onnx.TensorProto.UINT8}
    assert _activation_types(arm.model_bytes) == {onnx.TensorProto.INT8}
    assert x86.record["recipe"]["name"] == "ort-x86-avx2"
    # The x86 recipe keeps convs reading <= 4 channels float (measured slower in int8).
    assert [k["node"] for k in x86.record["kept_float"]] == ["conv_a"]
    assert "reading 1 channels" in x86.record["kept_float"][0]["reason"]
    assert arm.record["kept_float"] == []   # no such rule measured for ARM
    # int8 stays close to float on this untrained net (cosine of logits).
    ref, got = run(model, calib).ravel(), run(x86.model_bytes, calib).ravel()
    assert float(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.99


def test_float_op_types_of_a_recipe_stay_float(calib):
    recipe = choose_recipe("onnxruntime", "x86_64-workstation", float_op_types=("Gemm",))
    result = quantize_int8(conv_net(), {"x": calib}, Int8Options(recipe=recipe))
    ops = _ops(result.model_bytes)
    assert ops["Gemm"] == 1 and ops["Conv"] == 2
    assert {k["node"] for k in result.record["kept_float"]} == {"head", "conv_a"}
    # The Gemm's weight is still a float initializer: not preceded by a DequantizeLinear.
    import onnx
    graph = onnx.load_from_string(result.model_bytes).graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    assert gemm.input[1] in {i.name for i in graph.initializer}


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_every_calibration_method_runs_with_a_ragged_sample_count(method, capfd):
    # 50 samples in batches of 16: the histogram methods used to crash on the last batch.
    x = images(50, seed=3)
    with Calibrated(conv_net(), {"x": x}, CalibrationSettings(method=method)) as cal:
        model = cal.quantize(choose_recipe("onnxruntime", "x86_64-workstation"))
    assert _ops(model)["QuantizeLinear"] >= 3
    # onnxruntime's calibrators print progress; it must not reach the CLI's stdout.
    assert "histogram" not in capfd.readouterr().out


def test_percentile_clips_an_outlier_that_minmax_keeps():
    import onnx
    from onnx import numpy_helper
    x = images(64, seed=4)
    x[0, 0, 0, 0] = 50.0   # one wild pixel
    scales = {}
    for method in ("minmax", "percentile"):
        settings = CalibrationSettings(method=method, percentile=99.9)
        with Calibrated(conv_net(), {"x": x}, settings) as cal:
            model = onnx.load_from_string(cal.quantize(choose_recipe("onnxruntime", "rpi4b")))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear"
                 and n.input[0] == "x")
        scales[method] = float(inits[q.input[1]])
    assert scales["minmax"] == pytest.approx(50.0 / 255, rel=0.05)   # int8 activations: 255 steps
    assert scales["percentile"] < scales["minmax"] / 5


def test_bad_calibration_is_refused_with_one_clear_error():
    with pytest.raises(ConversionError, match="needs calibration data"):
        Calibrated(conv_net(), {})
    with pytest.raises(ConversionError, match=r"no samples for input\(s\) \['x'\]"):
        Calibrated(conv_net(), {"image": images(4)})
    with pytest.raises(ConversionError, match="batches of 8"):
        with Calibrated(conv_net(batch=8), {"x": images(4)}) as cal:
            cal.quantize(choose_recipe("onnxruntime", "rpi4b"))
    with pytest.raises(ConversionError, match="calibration method"):
        CalibrationSettings(method="kl")
