"""Activation smoothing (SmoothQuant-style) moves planted outlier channels of MatMul inputs
into the weights without changing the float function, and int8 gets closer to float; the
accuracy-aware pass tries it and records it (issue 18)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.int8 import AccuracyTarget, choose_recipe
from edgepack.converters.int8.calibration_choice import prepare_calibrated
from edgepack.converters.int8.quantize import Calibrated, CalibrationSettings
from edgepack.converters.int8.smoothing import SMOOTH_PREFIX, smooth

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)
WIDTH = 32
#: Planted outliers: LayerNorm channels 3 and 17 scaled x40 and x25 (trained transformers
#: show such channels, 10-100x the median, in LayerNorm outputs).
OUTLIERS = {3: 40.0, 17: 25.0}


def _init(a: np.ndarray, name: str):
    return numpy_helper.from_array(np.asarray(a, np.float32), name)


def _layer_norm_net(seed: int = 0, outliers: dict[int, float] | None = None,
                    residual: bool = False) -> bytes:
    """x[N,32] -> LayerNorm -> h -> MatMul -> +b -> Relu -> MatMul -> logits[N,10].

    residual: post-LN style, h is also read by a residual Add (h + MatMul(h)), so 1/s
    cannot be folded into the LayerNorm and a Mul is inserted instead."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.8, 1.2, WIDTH)
    beta = rng.uniform(-0.1, 0.1, WIDTH)
    for channel, factor in (outliers or {}).items():
        gamma[channel] *= factor
        beta[channel] *= factor
    w1 = rng.standard_normal((WIDTH, 64)) / np.sqrt(WIDTH)
    for channel, factor in (outliers or {}).items():
        w1[channel] /= np.sqrt(factor)      # the outlier still matters, less than its size
    w2 = rng.standard_normal((64, 10)) / np.sqrt(64)
    inits = [_init(gamma, "gamma"), _init(beta, "beta"), _init(w1, "w1"),
             _init(rng.standard_normal(64) * 0.1, "b1"), _init(w2, "w2")]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], name="ln",
                              axis=-1, epsilon=1e-5)]
    first = "h"
    if residual:
        # a small update: the residual sum keeps the outliers of h (as in transformers)
        wr = rng.standard_normal((WIDTH, WIDTH)) * 0.2 / np.sqrt(WIDTH)
        inits.append(_init(wr, "wr"))
        nodes += [helper.make_node("MatMul", ["h", "wr"], ["r"], name="attention_out"),
                  helper.make_node("Add", ["h", "r"], ["hr"], name="residual")]
        first = "hr"
    nodes += [helper.make_node("MatMul", [first, "w1"], ["m1"], name="ffn_in"),
              helper.make_node("Add", ["m1", "b1"], ["a1"], name="ffn_bias"),
              helper.make_node("Relu", ["a1"], ["r1"], name="ffn_relu"),
              helper.make_node("MatMul", ["r1", "w2"], ["logits"], name="head")]
    graph = helper.make_graph(
        nodes, "ln_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _samples(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, WIDTH)).astype(np.float32)


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _matmuls_only(model: bytes) -> list[str]:
    """Every node but the MatMuls, as the static int8 of transformers leaves them
    (converters/hf_onnx.non_matmul_nodes)."""
    return [n.name for n in onnx.load_from_string(model).graph.node
            if n.op_type != "MatMul" and not n.name.startswith(SMOOTH_PREFIX)]


def _int8_error(model: bytes, calib: np.ndarray, held: np.ndarray, reference: np.ndarray,
                exclude: list[str] = ()) -> tuple[float, bytes]:
    with Calibrated(model, {"x": calib}, CalibrationSettings(float_outputs=True)) as c:
        quantized = c.quantize(RECIPE, exclude)
    got = _run(quantized, held)
    return float(np.sum((got - reference) ** 2) / np.sum(reference ** 2)), quantized


def test_smoothing_folds_into_the_layer_norm_keeping_float_outputs():
    planted = _layer_norm_net(outliers=OUTLIERS)
    calib, held = _samples(256, 1), _samples(256, 2)
    result = smooth(planted, {"x": calib})
    by_tensor = {t.tensor: t for t in result.tensors}
    assert set(by_tensor) == {"h"}             # r1 (after Relu) has no outlier channels
    h = by_tensor["h"]
    assert h.folded_into == "ln" and h.readers == ("ffn_in",)
    assert h.outlier_ratio_before > 20 and h.outlier_ratio_after < 0.5 * h.outlier_ratio_before
    graph = onnx.load_from_string(result.model_bytes).graph
    assert [n.op_type for n in graph.node] == ["LayerNormalization", "MatMul", "Add", "Relu",
                                               "MatMul"]      # no op added
    assert {i.name for i in graph.initializer} >= {"gamma/smoothed", "w1/smoothed"}
    assert "gamma" not in {i.name for i in graph.initializer}   # the replaced ones dropped

    reference = _run(planted, held)
    smoothed = _run(result.model_bytes, held)
    assert np.max(np.abs(smoothed - reference)) <= 1e-5 * np.max(np.abs(reference))

    before, _ = _int8_error(planted, calib, held, reference)
    after, _ = _int8_error(result.model_bytes, calib, held, reference)
    assert after < 0.5 * before, (before, after)


def test_smoothing_inserts_a_float_division_when_the_tensor_has_other_readers():
    planted = _layer_norm_net(outliers=OUTLIERS, residual=True)
    calib, held = _samples(256, 1), _samples(256, 2)
    float_nodes = _matmuls_only(planted)
    result = smooth(planted, {"x": calib}, float_nodes=float_nodes)
    by_tensor = {t.tensor: t for t in result.tensors}
    assert by_tensor["h"].folded_into is None           # the residual Add reads h too
    assert by_tensor["h"].readers == ("attention_out",)
    assert by_tensor["hr"].folded_into is None and by_tensor["hr"].readers == ("ffn_in",)
    graph = onnx.load_from_string(result.model_bytes).graph
    muls = [n for n in graph.node if n.name.startswith(SMOOTH_PREFIX)]
    assert len(muls) == 2 and all(n.op_type == "Mul" for n in muls)
    residual = next(n for n in graph.node if n.name == "residual")
    assert "h" in residual.input                        # the Add still reads the original
    onnx.checker.check_model(onnx.load_from_string(result.model_bytes))   # still sorted

    reference = _run(planted, held)
    np.testing.assert_allclose(_run(result.model_bytes, held), reference,
                               atol=1e-5 * np.max(np.abs(reference)))
    before, _ = _int8_error(planted, calib, held, reference, float_nodes)
    after, quantized = _int8_error(result.model_bytes, calib, held, reference, float_nodes)
    assert after < 0.5 * before, (before, after)
    # the divisions stay float: no 8-bit quantizer sees the outliers before them
    q = onnx.load_from_string(quantized).graph
    producer = {o: n for n in q.node for o in n.output}
    muls = [n for n in q.node if n.name.startswith(SMOOTH_PREFIX) and n.op_type == "Mul"]
    assert len(muls) == 2
    for mul in muls:
        assert producer[mul.input[0]].op_type != "DequantizeLinear"


def test_no_division_after_a_quantized_producer():
    # Quantizing every op, the LayerNorm and the residual Add write 8-bit outputs: a
    # division after them would read the outliers already rounded, so none is inserted.
    planted = _layer_norm_net(outliers=OUTLIERS, residual=True)
    result = smooth(planted, {"x": _samples(256, 1)}, float_nodes=())
    assert result.tensors == () and result.model_bytes == planted
    assert "2 MatMul/Gemm input(s) have outlier channels" in result.reason


def test_even_channels_are_left_alone():
    plain = _layer_norm_net()
    result = smooth(plain, {"x": _samples(128, 1)})
    assert result.tensors == () and result.model_bytes == plain
    assert "no MatMul/Gemm input has outlier channels" in result.reason


def test_the_accuracy_aware_pass_keeps_smoothing_and_records_it():
    planted = _layer_norm_net(outliers=OUTLIERS, residual=True)
    calib = {"x": _samples(256, 1)}
    calibrated, records = prepare_calibrated(planted, calib, RECIPE, CalibrationSettings(),
                                             AccuracyTarget(0.999, samples=256),
                                             _matmuls_only(planted), equalization=False,
                                             choice=False)
    try:
        methods = {r["method"]: r for r in records}
        record = methods["activation_smoothing"]
        assert record["kept"] is True
        assert record["tensors"] == 2 and record["muls_inserted"] == 2
        assert set(record["alphas"]) == {"0.5", "0.75"}
        assert record["error_after"] < 0.5 * record["error_before"]
        assert record["agreement_after"] >= record["agreement_before"]
        assert SMOOTH_PREFIX in calibrated.model_bytes.decode("latin-1")
        assert calibrated.reference_bytes == planted    # judged against the original
    finally:
        calibrated.close()


def test_the_pass_records_why_smoothing_was_skipped():
    calibrated, records = prepare_calibrated(_layer_norm_net(), {"x": _samples(256, 1)},
                                             RECIPE, CalibrationSettings(),
                                             AccuracyTarget(0.9999, samples=256),
                                             equalization=False, choice=False)
    calibrated.close()
    record = next(r for r in records if r["method"] == "activation_smoothing")
    assert record["kept"] is False and "outlier" in record["skipped"]


def test_inspect_shows_smoothing_kept_and_why_a_method_was_not_tried():
    from edgepack.cli.describe_quantization import quantization_lines
    lines = quantization_lines({"mode": "int8", "accuracy_aware": {
        "target_agreement": 0.99, "agreement_all_int8": 0.9, "agreement": 0.99, "met": True,
        "methods": [{"method": "activation_smoothing", "agreement_before": 0.9,
                     "agreement_after": 0.99, "kept": True},
                    {"method": "block_reconstruction", "kept": False,
                     "skipped": "no weighted layer to reconstruct"}]}})
    assert "    activation_smoothing: agreement 0.9000 -> 0.9900, kept" in lines
    assert "    block_reconstruction: not tried: no weighted layer to reconstruct" in lines


def test_a_not_tried_method_first_does_not_break_the_pass(calib):
    # Float outputs asked up front (as the text path does): the pass's first record is then
    # smoothing's "not tried", which has no scores; the all-int8 figure comes from the
    # first method that was measured.
    from edgepack.converters.int8 import Int8Options, quantize_int8
    from int8_models import conv_net
    result = quantize_int8(conv_net(seed=3, outlier=100.0), {"x": calib}, Int8Options(
        device="x86_64-workstation", recipe_overrides=(("float_thin_convs", 0),),
        calibration=CalibrationSettings(float_outputs=True),
        accuracy=AccuracyTarget(0.9999, max_float_layers=0)))
    aware = result.record["accuracy_aware"]
    assert aware["methods"][0]["method"] == "activation_smoothing"
    assert "skipped" in aware["methods"][0]
    measured = next(m for m in aware["methods"] if "agreement_before" in m)
    assert aware["agreement_all_int8"] == measured["agreement_before"]
