"""The int8 accuracy-aware search steered by the task's metric: a tiny detector (YOLO v8
style output [N, 4 + C, A]) whose outputs have no top-1, scored by detection agreement
(converters.detection.detection_metric) as validation and --accuracy-target gate it."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.detection import detection_metric
from edgepack.converters.int8 import AccuracyTarget, Int8Options, choose_recipe, quantize_int8
from edgepack.converters.int8.scoring import AgreementMeter
from edgepack.runtime.specs import TensorSpec

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)
DECODE = [{"op": "yolo", "version": "v8", "coordinates": "normalized", "score_threshold": 0.3},
          {"op": "nms", "iou": 0.45, "max_detections": 10}]
LABELS = ["a", "b"]


def _detector(outlier: float) -> bytes:
    """x[N,3,16,16] -> Conv A (8 ch, channel 0 x outlier) -> Relu -> Conv B (stride 4, reads
    channel 0 / outlier) -> Sigmoid -> [N, 6, 16]: cx, cy, w, h and 2 class scores per
    cell of a 4x4 grid. The float function does not depend on `outlier`."""
    rng = np.random.default_rng(0)
    wa = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.4
    ba = rng.standard_normal(8).astype(np.float32) * 0.1
    wb = rng.standard_normal((6, 8, 4, 4)).astype(np.float32) * 0.3
    bb = rng.standard_normal(6).astype(np.float32) * 0.1
    wa[0] *= outlier
    ba[0] *= outlier
    wb[:, 0] /= outlier
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((wa, "wa"), (ba, "ba"), (wb, "wb"), (bb, "bb"),
              (np.array([0, 6, 16], np.int64), "shape"))]
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["a_r"], name="relu_a"),
             helper.make_node("Conv", ["a_r", "wb", "bb"], ["b"], name="conv_b",
                              strides=[4, 4]),
             helper.make_node("Sigmoid", ["b"], ["s"], name="sigmoid"),
             helper.make_node("Reshape", ["s", "shape"], ["boxes"], name="reshape")]
    graph = helper.make_graph(
        nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 6, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _metric():
    return detection_metric(DECODE, [TensorSpec("x", (1, 3, 16, 16), "float32", "NCHW")],
                            [TensorSpec("boxes", (1, 6, 16), "float32")], LABELS)


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, 3, 16, 16)).astype(np.float32)


def test_detection_metric_is_one_for_the_same_outputs_and_drops_for_moved_boxes():
    metric = _metric()
    model = _detector(1.0)
    meter = AgreementMeter("onnxruntime", model, {"x": _images(32, 1)}, metric=metric)
    assert meter(model).agreement == 1.0
    out = meter.reference["boxes"]
    moved = out.copy()
    moved[:, 0] = np.clip(moved[:, 0] + 0.3, 0, 1)          # every box 0.3 to the right
    assert metric(meter.reference, {"boxes": moved}) < 0.75


def test_the_search_is_steered_by_detection_agreement():
    calib = {"x": _images(96, 1)}
    target = AccuracyTarget(min_agreement=0.9, max_float_layers=2, samples=96)
    # Top-1 agreement of a [N, 6, 16] output means nothing (1.0 by definition): without the
    # task metric the collapsed int8 detector "meets" the target with no layer float.
    blind = quantize_int8(_detector(1000.0), calib, Int8Options(
        recipe=RECIPE, accuracy=target, prepare=False))
    assert blind.record["accuracy_aware"]["agreement_all_int8"] == 1.0
    assert blind.record["accuracy_aware"]["kept_float"] == []

    metric = _metric()
    steered = quantize_int8(_detector(1000.0), calib, Int8Options(
        recipe=RECIPE, accuracy=target, prepare=False, task_metric=metric))
    record = steered.record["accuracy_aware"]
    assert record["agreement_all_int8"] < 0.9          # what detection agreement sees
    assert record["met"] and record["agreement"] >= 0.9
    assert {k["node"] for k in record["kept_float"]} == {"conv_a", "conv_b"}
    # the recorded figure is the detection agreement of the shipped model
    meter = AgreementMeter("onnxruntime", _detector(1000.0), calib, metric=metric)
    assert meter(steered.model_bytes).agreement == pytest.approx(record["agreement"], abs=1e-6)
    assert meter(blind.model_bytes).agreement < 0.9


def test_convert_config_of_a_detector_with_an_accuracy_target_gets_the_detection_metric():
    from types import SimpleNamespace

    from edgepack.converters.config import ConversionConfig, QuantizationConfig
    from edgepack.converters.detection import with_detection_metric
    source = SimpleNamespace(input_names=("x",), example_inputs=(np.zeros((2, 3, 16, 16)),),
                             layouts=("NCHW",))
    quant = QuantizationConfig(mode="int8", accuracy_target=0.9)
    config = ConversionConfig(quantization=quant, task={"kind": "detect"}, decode=DECODE,
                              labels=LABELS)
    steered = with_detection_metric(config, source)
    metric = steered.quantization.task_metric
    assert callable(metric)
    assert steered.quantization.int8_options("onnxruntime").task_metric is metric
    outputs = {"boxes": AgreementMeter("onnxruntime", _detector(1.0), {"x": _images(8, 1)}
                                       ).reference["boxes"]}
    assert metric(outputs, outputs) == 1.0
    moved = {"boxes": outputs["boxes"].copy()}
    moved["boxes"][:, 0] = np.clip(moved["boxes"][:, 0] + 0.3, 0, 1)
    assert metric(outputs, moved) < 0.75
    # not a detector, or no accuracy target: top-1 stays the metric
    for other in (ConversionConfig(quantization=quant),
                  ConversionConfig(quantization=QuantizationConfig(mode="int8"),
                                   task={"kind": "detect"}, decode=DECODE, labels=LABELS)):
        assert with_detection_metric(other, source) is other
