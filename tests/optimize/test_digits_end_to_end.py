"""Issue 7's must-show results on scikit-learn digits (slow: they train real models).

Timing is not asserted here (benchmarks/optimize.py prints the latency ratios); these tests
assert accuracy, parameter counts and sizes of the exported int8 bundles.
"""
from __future__ import annotations

import statistics

import pytest

from edgepack.converters import optimize

pytestmark = pytest.mark.slow


def test_half_pruned_cnn_keeps_accuracy_and_int8_bundle_is_smaller(digits, trained_cnn,
                                                                     tmp_path):
    import optimize_digits as d
    from edgepack.runtime import load

    x_train, y_train, x_test, y_test = digits
    base_acc = optimize.evaluate(trained_cnn, (x_test, y_test))[1]
    with d.one_torch_thread():
        pruned, result = d.prune_and_fine_tune(trained_cnn, x_train, y_train, amount=0.5)
    pruned_acc = optimize.evaluate(pruned, (x_test, y_test))[1]
    assert base_acc >= 0.97, base_acc  # the comparison only means something for a good model
    assert pruned_acc >= base_acc - 0.01, (pruned_acc, base_acc)  # within 1 point
    # every conv lost half its filters: interior convs keep 1/4 of their weights
    assert [(c.before, c.after) for c in result.pruned] == [(32, 16), (64, 32), (128, 64),
                                                           (128, 64)]
    assert result.param_ratio >= 3.5, result.param_ratio

    paths = {"base": tmp_path / "base.edgepack", "pruned": tmp_path / "pruned.edgepack"}
    conv = {"base": d.int8_bundle(trained_cnn, paths["base"], x_train, x_test, y_test),
            "pruned": d.int8_bundle(pruned, paths["pruned"], x_train, x_test, y_test)}
    # measured on what the device gets, not on the torch module
    onnx_params = {n: d.onnx_parameter_count(p) for n, p in paths.items()}
    assert onnx_params["base"] / onnx_params["pruned"] >= 3.0, onnx_params
    assert conv["base"].model_bytes / conv["pruned"].model_bytes >= 1.5
    assert paths["base"].stat().st_size / paths["pruned"].stat().st_size >= 1.5
    accuracy = {}
    for name, path in paths.items():
        with load(path, threads=1) as model:
            accuracy[name] = d.bundle_accuracy(model, x_test, y_test)
    # 360 test digits: one point is 3.6 of them, under the run-to-run spread of two
    # trainings on another CPU (AMD EPYC, session 8: int8 base 358/360, pruned 354/360;
    # the torch models were within one point there too)
    assert accuracy["pruned"] >= accuracy["base"] - 0.015, accuracy
    assert accuracy["pruned"] >= pruned_acc - 0.015, (accuracy, pruned_acc)  # int8 kept it


def test_distilled_student_beats_student_trained_alone(digits, trained_cnn):
    """Students learn from the same 300 labeled samples, from the same initialization; the
    distilled one also gets the teacher's soft outputs on them.

    On the whole train split the gain is within seed noise on digits (benchmarks/optimize.py
    prints that regime too); with a small labeled budget the teacher's knowledge shows.
    """
    import optimize_digits as d

    x_train, y_train, x_test, y_test = digits
    student_params = optimize.count_parameters(d.student_cnn(0))
    assert student_params <= 0.25 * optimize.count_parameters(trained_cnn)
    n = d.TRANSFER_SAMPLES
    seeds = (0, 1, 2, 3)
    with d.one_torch_thread():
        rows = d.distill_vs_alone(trained_cnn, x_train[:n], y_train[:n], x_test, y_test, seeds,
                                  d.DISTILL_TRANSFER)
    distilled, alone = [r[0] for r in rows], [r[1] for r in rows]
    print("distilled", distilled, "alone", alone)
    # measured: +1.1 and +1.7 points on average over 6 seeds with two different teachers
    assert statistics.mean(distilled) >= statistics.mean(alone) + 0.005, rows
    assert sum(a >= b for a, b in rows) >= 3, rows  # not one lucky seed
