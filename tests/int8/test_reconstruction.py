"""Block reconstruction (converters/int8/reconstruction.py): the learned weights are on the
int8 grid the quantizer computes anyway (quantizing the rewritten float model with the same
ranges gives the same scales and exactly the learned integers, every layer int8, the same
graph as plain int8), the torch simulation equals onnxruntime's QDQ model, and on a toy net
the reconstructed int8 model is closer to the float one on inputs it was not fitted on."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgepack.converters.int8 import Calibrated, CalibrationSettings
from edgepack.converters.int8.qdq_weights import quantized_weights
from edgepack.converters.int8.recipes import choose_recipe

torch = pytest.importorskip("torch")

from edgepack.converters.int8.qdq_simulation import QdqGraph, QdqSimulator  # noqa: E402
from edgepack.converters.int8.reconstruction import (ReconstructionSettings,  # noqa: E402
                                                     fit_inputs, reconstruct)
from int8_models import conv_net, run  # noqa: E402

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)
#: the rounding alone (the activation steps as calibrated): see learned_steps for both
SETTINGS = ReconstructionSettings(iterations=120, batch=32, mixes=3, seed=0,
                                  learn_ranges=False)


def _error(model: bytes, reference: np.ndarray, x: np.ndarray) -> float:
    got = run(model, x)
    return float(np.sum((got - reference) ** 2) / np.sum(reference ** 2))


def _reconstructed(calib, settings: ReconstructionSettings):
    """(float model, plain int8, the reconstruction, its int8 model): a conv net's plain
    int8 (float outputs), reconstructed on 133 samples and quantized again with the plain
    ranges, the learned ones in their place (none unless `learn_ranges`)."""
    float_model = conv_net(seed=3, channels=8)
    calibration = CalibrationSettings(float_outputs=True)
    with Calibrated(float_model, {"x": calib}, calibration) as plain_cal:
        plain = plain_cal.quantize(RECIPE)
        ranges = plain_cal.ranges()
    result = reconstruct(float_model, plain, {"x": calib[:133]}, settings)
    with Calibrated.with_ranges(result.model_bytes, {"x": calib}, calibration,
                                {**ranges, **result.ranges}) as c:
        model = c.quantize(RECIPE)
    return float_model, plain, result, model


@pytest.fixture(scope="module")
def rebuilt(calib):
    return _reconstructed(calib, SETTINGS)


def test_the_simulation_equals_onnxruntimes_qdq_model(calib, rebuilt):
    float_model, plain, _, _ = rebuilt
    graph = QdqGraph(plain, float_model)
    sim = QdqSimulator(graph)                 # round-to-nearest, as the quantizer wrote it
    with torch.no_grad():
        got = sim.run(0, len(graph.nodes), {"x": torch.tensor(calib[:64])})["logits"]
    want = run(plain, calib[:64])
    # the fused int8 kernels round the int32 bias and may break a requantization tie the
    # other way: a few elements differ by about one step of an inner tensor
    diff = np.abs(got.numpy() - want)
    assert np.mean(diff) < 2e-4 * np.max(np.abs(want)), np.mean(diff)
    assert np.max(diff) < 5e-3 * np.max(np.abs(want)), np.max(diff)
    assert np.mean(got.numpy().argmax(1) == want.argmax(1)) >= 0.98


def test_learned_weights_are_on_the_quantizers_grid_and_every_layer_stays_int8(rebuilt):
    float_model, plain, result, model = rebuilt
    assert result.blocks and sum(b.flipped for b in result.blocks) > 0
    before, after = quantized_weights(plain), quantized_weights(model)
    assert sorted(before) == sorted(after) == ["conv_a", "conv_b", "head"]
    inits = {i.name: onnx.numpy_helper.to_array(i)
             for i in onnx.load_from_string(result.model_bytes).graph.initializer}
    changed = 0
    for name, w in after.items():
        np.testing.assert_allclose(w.scale, before[name].scale, rtol=1e-6)   # same grid
        learned = inits[w.node.input[1].replace("_DequantizeLinear_Output", "")]
        scale = w.scale.reshape((-1,) + (1,) * (learned.ndim - 1))
        # re-quantizing the learned float weights gives exactly the learned integers
        np.testing.assert_array_equal(np.round(learned / scale), w.values)
        changed += int(np.sum(w.values != before[name].values))
    assert changed == sum(b.flipped for b in result.blocks)
    ops = [n.op_type for n in onnx.load_from_string(model).graph.node]
    assert ops == [n.op_type for n in onnx.load_from_string(plain).graph.node]


def test_reconstruction_lowers_the_error_on_inputs_it_was_not_fitted_on(held_out, rebuilt):
    float_model, plain, result, model = rebuilt
    reference = run(float_model, held_out)
    assert all(b.error_after <= b.error_before for b in result.blocks)
    assert _error(model, reference, held_out) < 0.9 * _error(plain, reference, held_out)


def test_fit_inputs_add_mixes_of_calibration_samples():
    x = np.random.default_rng(0).uniform(0, 1, (10, 1, 4, 4)).astype(np.float32)
    out = fit_inputs(x, ReconstructionSettings(mixes=2, flips=True))
    assert out.shape == (10 + 10 + 20, 1, 4, 4)
    np.testing.assert_array_equal(out[:10], x)
    np.testing.assert_array_equal(out[10:20], x[..., ::-1])
    assert out[20:].min() >= x.min() and out[20:].max() <= x.max()


def test_the_pass_reconstructs_the_float_model_it_was_given_and_judges_on_held_back(
        calib, monkeypatch):
    from edgepack.converters.int8 import AccuracyTarget, accuracy_aware
    from edgepack.converters.int8 import reconstruction
    seen = []
    real = reconstruction.reconstruct

    def recording(float_model, qdq_model, samples, settings):
        seen.append((float_model, len(samples["x"])))
        return real(float_model, qdq_model, samples, settings)

    monkeypatch.setattr(reconstruction, "reconstruct", recording)
    # bias correction is undone (its trial model stays in the Calibrated until the next
    # measurement): the reconstruction must start from the model given, not from that
    from edgepack.converters.int8 import selection
    judged = []
    real_better = selection.fitted_better

    def undo_first(after, before, *args):
        judged.append(after)
        return False if len(judged) == 1 else real_better(after, before, *args)

    monkeypatch.setattr(selection, "fitted_better", undo_first)
    float_model = conv_net(seed=0, outlier=30.0)
    with Calibrated(float_model, {"x": calib}) as calibrated:
        mixed = accuracy_aware(calibrated, RECIPE, {"x": calib}, AccuracyTarget(
            0.9999, max_float_layers=0,
            # the rounding only: with learned steps it is kept on this net, and learned
            # rounding then has nothing left to learn (not judged)
            reconstruction=ReconstructionSettings(iterations=30, mixes=1,
                                                  learn_ranges=False)))
    methods = {m["method"]: m for m in mixed.to_record()["methods"]}
    assert not methods["bias_correction"]["kept"] and len(judged) == 3   # + adaround
    assert seen == [(float_model, 133)]
    rebuilt = methods["block_reconstruction"]
    assert rebuilt["decided_on"] == "67 held-back calibration samples (fitted on 133)"
    assert rebuilt["blocks"] >= 1 and rebuilt["samples_fitted"] == 2 * 133


@pytest.fixture(scope="module")
def learned_steps(calib):
    return _reconstructed(calib, ReconstructionSettings(
        iterations=120, batch=32, mixes=3, seed=0, learn_ranges=True,
        range_learning_rate=1e-2))


def _steps(model: bytes, float_model: bytes) -> dict[str, tuple[float, float]]:
    return {n.inputs[0]: (n.attrs["scale"], n.attrs["zero"])
            for n in QdqGraph(model, float_model).nodes if n.op == "FQ"}


def test_learned_activation_steps_are_what_the_quantizer_recomputes(learned_steps):
    float_model, plain, result, model = learned_steps
    before, after = _steps(plain, float_model), _steps(model, float_model)
    assert sorted(before) == sorted(after)
    # the learnable tensors: the input and conv_a's ReLU output (conv_b's feeds a
    # Flatten, which onnxruntime quantizes with its input's scale: not learned)
    assert sorted(result.ranges) == ["a_r", "x"]
    assert result.to_record()["ranges_learned"] == 2
    for tensor, (scale, zero) in after.items():
        assert zero == before[tensor][1]                      # zero points unchanged
        if tensor in result.ranges:
            assert scale != before[tensor][0]
            low, high = result.ranges[tensor]
            # exactly the step the fit continued with (exported_range), no float drift
            assert scale == np.float32(exported_range_step(low, high))
        else:
            assert scale == before[tensor][0]
    ops = [n.op_type for n in onnx.load_from_string(model).graph.node]
    assert ops == [n.op_type for n in onnx.load_from_string(plain).graph.node]


def exported_range_step(low: float, high: float) -> float:
    from edgepack.converters.int8.reconstruction_export import exported_range
    step = (high - low) / 255.0
    zero = round(-low / step)
    return exported_range(step, {"zero": zero, "qmin": 0, "qmax": 255})[2]


def test_the_exported_model_computes_what_the_fit_simulated(calib, learned_steps):
    float_model, _, result, model = learned_steps
    # the simulation of the exported QDQ model (its steps and, rounding the rewritten
    # float weights to nearest, its integers, as written) is the fitted simulation; it
    # equals onnxruntime's run of that model as for plain int8
    graph = QdqGraph(model, result.model_bytes)
    with torch.no_grad():
        got = QdqSimulator(graph).run(0, len(graph.nodes), {"x": torch.tensor(calib[:64])})
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # run as written (Q/DQ in float, no fused int8 kernels). The simulation keeps the
    # float biases the graph holds in int32, so elements differ slightly, as for the plain
    # model (measured: mean 1.6e-4 of the output range plain, 2.2e-4 here); steps off by
    # a float32 rounding would move whole activation steps
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": calib[:64]})[0]
    diff = np.abs(got["logits"].numpy() - want)
    assert np.mean(diff) < 2.5e-4 * np.max(np.abs(want)), np.mean(diff)
    assert np.array_equal(got["logits"].numpy().argmax(1), want.argmax(1))


def test_learned_steps_lower_the_error_on_inputs_they_were_not_fitted_on(held_out, rebuilt,
                                                                          learned_steps):
    float_model, plain, _, model = learned_steps
    reference = run(float_model, held_out)
    assert _error(model, reference, held_out) < 0.9 * _error(plain, reference, held_out)


@pytest.mark.parametrize("kept", [False, True])
def test_the_pass_quantizes_with_the_learned_ranges_only_when_it_keeps_them(calib,
                                                                             monkeypatch,
                                                                             kept):
    from edgepack.converters.int8 import AccuracyTarget, accuracy_aware, selection
    judged = []

    def decided(after, before, *args):
        judged.append(after)
        # bias correction and learned rounding undone; the reconstruction as parametrized
        return kept and len(judged) == 2
    monkeypatch.setattr(selection, "fitted_better", decided)
    float_model = conv_net(seed=0, outlier=30.0)
    with Calibrated(float_model, {"x": calib}) as calibrated:
        calibrated.quantize(RECIPE)
        calibrated_ranges = calibrated.ranges()
        mixed = accuracy_aware(calibrated, RECIPE, {"x": calib}, AccuracyTarget(
            0.9999, max_float_layers=0,
            reconstruction=ReconstructionSettings(iterations=30, mixes=1,
                                                  range_learning_rate=1e-2)))
        after_ranges = calibrated.ranges()
    methods = {m["method"]: m for m in mixed.to_record()["methods"]}
    assert methods["block_reconstruction"]["kept"] is kept
    assert methods["block_reconstruction"]["ranges_learned"] >= 1
    changed = {t for t in calibrated_ranges if after_ranges[t] != calibrated_ranges[t]}
    assert bool(changed) is kept
    steps = _steps(mixed.model_bytes, float_model)
    plain_steps = _steps(calibrated_model_of(float_model, calib), float_model)
    assert (steps != plain_steps) is kept


def calibrated_model_of(float_model: bytes, calib: np.ndarray) -> bytes:
    with Calibrated(float_model, {"x": calib}) as c:
        return c.quantize(RECIPE)
