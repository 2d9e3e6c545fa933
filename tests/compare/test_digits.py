"""`compare` on the digits CNN (PyTorch and Keras): every number in the table is checked
against a direct measurement of the same bundle, made here without edgepack.compare.

Tolerances: sizes and accuracy/agreement exactly (same bundle, same samples, argmax);
latency: p50/p99 exactly the percentiles of the recorded samples, and within a factor of 50
of a direct timing — a unit or bookkeeping error (us vs ms, per-block vs per-run) is caught,
while machine load (this 2-core box is shared; a factor of 6.6 was seen on a 0.02 ms model)
is not mistaken for one: speed itself is the benchmarks' job, not a unit test's; memory only
within sane bounds (it is a whole-process figure that depends on the engine build).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgepack.compare import CompareConfig, LatencyConfig, compare
from edgepack.compare.pick import choose, status_for
from edgepack.compare.result import OK, OVER_BUDGET
from edgepack.runtime import load, read_bundle

pytestmark = pytest.mark.slow

LATENCY = LatencyConfig(rounds=5, block=10, warmup=5)
LATENCY_FACTOR = 50.0


def held_out_indices(count: int, holdout: float = 0.3, seed: int = 0) -> np.ndarray:
    """The split compare documents: the last `holdout` of a seeded permutation, sorted."""
    held = max(1, int(round(count * holdout)))
    return np.sort(np.random.default_rng(seed).permutation(count)[count - held:])


def direct_outputs(path, x: np.ndarray) -> np.ndarray:
    """The bundle's model run with its engine directly (no edgepack runtime)."""
    data = read_bundle(path).model_bytes()
    if read_bundle(path).manifest.model.engine == "onnxruntime":
        import onnxruntime as ort
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: x[i:i + 64]})[0]
                               for i in range(0, len(x), 64)])
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=data)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], (1, *x.shape[1:]))
    interpreter.allocate_tensors()
    out_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for sample in x:
        interpreter.set_tensor(detail["index"], sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out_index)[0].copy())
    return np.stack(outputs)


def direct_p50_ms(path, x: np.ndarray, threads) -> float:
    with load(path, threads=threads) as model:
        feeds = {model.inputs[0].name: x[:1]}
        for _ in range(10):
            model.run(feeds)
        times = []
        for _ in range(100):
            start = time.perf_counter()
            model.run(feeds)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


@pytest.fixture(scope="module")
def torch_case(torch_digits, unseen_digits, tmp_path_factory):
    x, y = unseen_digits
    result = compare(torch_digits, {"x": x, "labels": y},
                     CompareConfig(device="rpi4b", latency=LATENCY, name="digits-torch"),
                     work_dir=tmp_path_factory.mktemp("torch"))
    import torch
    held = held_out_indices(len(x))
    xs = x[held]
    with torch.no_grad():
        source = torch_digits(torch.from_numpy(xs)).numpy()
    return result, xs, y[held], source


@pytest.fixture(scope="module")
def keras_case(keras_digits, unseen_digits, tmp_path_factory):
    x, y = unseen_digits
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    result = compare(keras_digits, {"image": nhwc, "labels": y},
                     CompareConfig(device="rpi4b", latency=LATENCY, name="digits-keras"),
                     work_dir=tmp_path_factory.mktemp("keras"))
    held = held_out_indices(len(x))
    xs = nhwc[held]
    source = np.asarray(keras_digits(xs, training=False))
    return result, xs, y[held], source


def _check_against_direct(result, xs, ys, source):
    from edgepack.devices import check_bundle
    assert result.held_out == len(xs)
    source_accuracy = float(np.mean(source.argmax(1) == ys))
    assert source_accuracy > 0.85  # the tiny CNN learned digits, so accuracy means something
    assert result.source_accuracy == source_accuracy
    measured = [r for r in result.rows if r.measured]
    assert measured
    for row in measured:
        path = row.path
        assert row.bundle_bytes == path.stat().st_size, row.key
        assert row.model_bytes == len(read_bundle(path).model_bytes()), row.key
        got = direct_outputs(path, xs)
        accuracy = float(np.mean(got.argmax(1) == ys))
        agreement = float(np.mean(got.argmax(1) == source.argmax(1)))
        assert row.accuracy.accuracy == accuracy, row.key
        assert row.accuracy.top1_agreement == agreement, row.key
        assert row.accuracy.source_accuracy == source_accuracy
        assert row.accuracy.drop_points == pytest.approx((source_accuracy - accuracy) * 100,
                                                         abs=1e-9)
        (err,) = row.accuracy.outputs
        assert err.max_abs == pytest.approx(float(np.abs(got - source).max()), rel=1e-3,
                                            abs=1e-6), row.key
        assert err.zero + sum(err.histogram) == source.size
        direct = direct_p50_ms(path, xs, result.threads)
        ratio = row.latency.p50_ms / direct
        assert 1 / LATENCY_FACTOR <= ratio <= LATENCY_FACTOR, (row.key, row.latency.p50_ms,
                                                               direct)
        assert len(row.latency.times_ms) == LATENCY.runs
        times = np.asarray(row.latency.times_ms)
        assert (times > 0).all(), row.key
        assert row.latency.p50_ms == pytest.approx(float(np.percentile(times, 50)), rel=1e-9)
        assert row.latency.result.p99_ms == pytest.approx(float(np.percentile(times, 99)),
                                                          rel=1e-9)
        assert 10 < row.memory.engine_baseline_mb < row.memory.peak_mb < 1500, row.memory
        assert row.memory.model_mb == pytest.approx(
            row.memory.peak_mb - row.memory.engine_baseline_mb)
        assert row.check["ok"] == check_bundle(path, "rpi4b").ok
        expected_status = OK if row.accuracy.drop_points <= 1.0 else OVER_BUDGET
        assert row.status == expected_status, row.key
    return measured


def test_torch_table_matches_direct_measurement(torch_case):
    result, xs, ys, source = torch_case
    measured = _check_against_direct(result, xs, ys, source)
    import importlib.util
    has_litert_torch = importlib.util.find_spec("litert_torch") is not None
    onnx = {"onnx/none", "onnx/fp16", "onnx/dynamic", "onnx/int8"}
    # pytorch -> tflite: fp32 through the optional litert-torch; every other combination
    # is a row with its reason (the missing extra, or quantization it does not do).
    assert {r.key for r in measured} == (onnx | {"tflite/none"} if has_litert_torch else onnx)
    assert result.threads == 2 or result.threads == min(4, __import__("os").cpu_count())
    for row in result.rows:
        if row.target == "tflite" and row.key not in {r.key for r in measured}:
            words = "--target onnx" if has_litert_torch else "litert-torch"
            assert row.status == "failed" and words in row.reason, row


def test_keras_table_matches_direct_measurement(keras_case):
    result, xs, ys, source = keras_case
    measured = _check_against_direct(result, xs, ys, source)
    assert {r.key for r in measured} == {f"{t}/{m}" for t in ("onnx", "tflite")
                                         for m in ("none", "fp16", "dynamic", "int8")}
    # Quantized bundles are smaller than fp32 of the same target (sizes are exact numbers).
    for target in ("onnx", "tflite"):
        fp32 = result.row(f"{target}/none").bundle_bytes
        assert result.row(f"{target}/int8").bundle_bytes < 0.5 * fp32


@pytest.mark.parametrize("case", ["torch_case", "keras_case"])
def test_pick_obeys_budget_when_fastest_is_outside(case, request):
    """Make the fastest measured bundle fall outside the budget (its accuracy replaced by
    one 0.5 points beyond it): the pick must be the next fastest eligible one."""
    from dataclasses import replace

    from edgepack.compare.accuracy import Accuracy
    result = request.getfixturevalue(case)[0]
    assert result.pick.key is not None
    pick = result.row(result.pick.key)
    assert pick.status == OK and pick.accuracy.drop_points <= result.max_drop
    assert pick.check["ok"] and pick.slower_than_fp32 is None
    measured = [r for r in result.rows if r.measured and r.latency]
    fastest = min(measured, key=lambda r: r.latency.p50_ms)
    src = fastest.accuracy.source_accuracy
    worse = Accuracy(fastest.accuracy.samples, src - (result.max_drop + 0.5) / 100, src,
                     fastest.accuracy.top1_agreement, result.max_drop + 0.5)
    status, reason = status_for(worse.drop_points, result.max_drop, "accuracy")
    assert status == OVER_BUDGET
    rows = [replace(r, accuracy=worse, status=status, reason=reason) if r is fastest else r
            for r in result.rows]
    new = choose(rows, "rpi4b")
    assert new.key != fastest.key
    eligible = [r for r in rows if r.status == OK and r.latency and r.check["ok"]
                and r.slower_than_fp32 is None]
    assert new.key == min(eligible, key=lambda r: r.latency.p50_ms).key
    assert (fastest.key, reason) in new.rejected
