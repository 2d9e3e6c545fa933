"""Model outputs left unrequantized: the last layer still runs in int8 (QGemm with a float
output), only the 8-bit rounding of the logits goes (issue 18)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from edgepack.converters.int8 import AccuracyTarget, choose_recipe
from edgepack.converters.int8.calibration_choice import prepare_calibrated
from edgepack.converters.int8.quantize import Calibrated, CalibrationSettings
from int8_models import conv_net, run

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)


def test_float_outputs_drop_only_the_output_requantization(calib, held_out, tmp_path):
    model = conv_net(seed=2)
    with Calibrated(model, {"x": calib}) as plain:
        q8 = plain.quantize(RECIPE)
        ranges = plain.ranges()
    with Calibrated.with_ranges(model, {"x": calib}, CalibrationSettings(float_outputs=True),
                                ranges) as floated:
        qf = floated.quantize(RECIPE)
    ops8 = [n.op_type for n in onnx.load_from_string(q8).graph.node]
    opsf = [n.op_type for n in onnx.load_from_string(qf).graph.node]
    assert ops8[-3:] == ["Gemm", "QuantizeLinear", "DequantizeLinear"]
    assert opsf == ops8[:-2]                      # nothing else changed
    reference = run(model, held_out)
    err8 = np.mean((run(q8, held_out) - reference) ** 2)
    errf = np.mean((run(qf, held_out) - reference) ** 2)
    assert errf < err8, (errf, err8)              # one rounding less
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(qf, options, providers=["CPUExecutionProvider"])
    optimized = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert optimized[-1] == "QGemm"               # the head still computes in int8


def test_prepare_calibrated_tries_float_outputs_first(calib):
    calibrated, records = prepare_calibrated(conv_net(seed=0, outlier=30.0), {"x": calib},
                                             RECIPE, CalibrationSettings(),
                                             AccuracyTarget(0.999), equalization=False,
                                             choice=False, smoothing=False)
    try:
        assert [r["method"] for r in records] == ["float_outputs"]
        record = records[0]
        # the noise-aware rule (selection.ptq_better): a significant agreement change, or
        # within its noise a significantly lower divergence from the float outputs
        if "agreement differs" in record["decided_by"]:
            better = record["agreement_after"] > record["agreement_before"]
        else:
            better = ": significant)" in record["decided_by"] and \
                record["divergence_after"] < record["divergence_before"]
        assert record["kept"] is better
        assert calibrated.settings.float_outputs is better
    finally:
        calibrated.close()
