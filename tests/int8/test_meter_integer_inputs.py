"""The accuracy-aware pass's AgreementMeter feeds integer inputs (token ids, masks) as
integers: it cast every sample to float32, which ONNX Runtime refuses for an int64 input,
so `--accuracy-target` could not score a text model."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.int8.scoring import AgreementMeter


def _embedding_classifier() -> bytes:
    table = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"]),
         helper.make_node("ReduceMean", ["vectors", "axis"], ["logits"], keepdims=0)],
        "bag", [helper.make_tensor_value_info("ids", TensorProto.INT64, [-1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [-1, 3])],
        [numpy_helper.from_array(table, "table"),
         numpy_helper.from_array(np.array([1], np.int64), "axis")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def test_meter_scores_a_model_with_token_id_inputs():
    model = _embedding_classifier()
    ids = np.random.default_rng(1).integers(0, 10, (50, 4))
    meter = AgreementMeter("onnxruntime", model, {"ids": ids})
    assert meter.samples["ids"].dtype == np.int64
    result = meter(model)
    assert result.agreement == 1.0 and result.error == 0.0
    assert meter.count == 50
