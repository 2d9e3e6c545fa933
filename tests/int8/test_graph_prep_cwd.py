"""onnxruntime's symbolic shape inference leaves sym_shape_infer_temp.onnx and a <uuid>.data
file in the working directory when it gives up; graph preparation must not (they turned up in
the repository root after a test run)."""
from __future__ import annotations

import os

from int8_models import conv_net

from edgepack.converters.int8.graph_prep import prepare_graph


def test_a_failing_shape_inference_leaves_nothing_in_the_working_directory(tmp_path,
                                                                         monkeypatch):
    from onnxruntime.quantization import shape_inference
    calls = []

    def litters_then_fails(src, dst, **options):
        calls.append(os.getcwd())
        open("sym_shape_infer_temp.onnx", "wb").close()
        open("0b8e31cc.data", "wb").close()
        raise Exception("Incomplete symbolic shape inference")

    monkeypatch.setattr(shape_inference, "quant_pre_process", litters_then_fails)
    monkeypatch.chdir(tmp_path)
    prepared = prepare_graph(conv_net())
    assert list(tmp_path.iterdir()) == [] and os.getcwd() == str(tmp_path)
    assert len(calls) == 2 and all(c != str(tmp_path) for c in calls)
    assert prepared is not None
