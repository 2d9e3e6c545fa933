"""The on-the-spot speed check: interleaving, medians, verdict and warning.

Timings themselves are never asserted (benchmarks/int8.py prints them); these tests check
the arithmetic with a fake clock and that a real measurement is reported consistently.
"""
from __future__ import annotations

import pytest
from int8_models import conv_net, images

from edgepack.converters.int8 import Int8Options, SpeedSettings, quantize_int8
from edgepack.converters.int8.speed import (SpeedPoint, SpeedReport, interleaved_medians,
                                            measure_speed)
from edgepack.runtime.errors import ConversionError


def test_runs_are_interleaved_and_medians_taken():
    order: list[str] = []
    costs = {"a": [5.0, 5.0, 100.0], "b": [2.0, 3.0, 2.0]}   # one outlier round for "a"
    # A fake clock: each reading after a timed run advances by that run's cost.
    readings = iter([0.0] + [x for i in range(3) for x in
                             (costs["a"][i], 0.0, costs["b"][i], 0.0)])
    now = [0.0]

    def clock() -> float:
        now[0] += next(readings)
        return now[0]

    runners = [lambda: order.append("a"), lambda: order.append("b")]
    a, b = interleaved_medians(runners, rounds=3, warmup=1, clock=clock)
    assert order == ["a", "b", "a", "b", "a", "b", "a", "b"]   # warm-up, then a/b alternate
    assert (a, b) == (5.0, 2.0)                               # medians ignore the outlier


def test_verdict_and_summary():
    fast = SpeedPoint(1, fp32_ms=10.0, int8_ms=6.5)
    even = SpeedPoint(2, fp32_ms=10.0, int8_ms=9.8)
    assert fast.ratio == pytest.approx(0.65) and fast.faster
    assert not even.faster   # within 5%: not worth int8's accuracy cost
    report = SpeedReport("onnxruntime", (fast, even), "x86_64 x86-avx2")
    assert not report.faster
    assert report.summary() == ("faster than fp32 here? NO: int8/fp32 latency x0.65 at "
                                "1 thread, x0.98 at 2 threads")
    record = report.to_record()
    assert record["faster_than_fp32"] is False
    assert [p["ratio"] for p in record["points"]] == [0.65, 0.98]


def test_real_measurement_is_consistent_and_warns_when_not_faster(caplog):
    model = conv_net()
    # The same model on both sides: int8 cannot be "faster", so the check must warn.
    with caplog.at_level("WARNING"):
        report = measure_speed(model, model, "onnxruntime",
                               SpeedSettings(threads=(1, 2), rounds=5, warmup=1))
    assert [p.threads for p in report.points] == [1, 2]
    for point in report.points:
        assert point.fp32_ms > 0 and point.int8_ms > 0
        assert point.ratio == pytest.approx(point.int8_ms / point.fp32_ms)
    assert ("not faster than fp32" in caplog.text) == (not report.faster)
    assert 0.5 < report.points[0].ratio < 2.0   # same model: only noise separates them


def test_speed_check_lands_in_the_quantization_record():
    x = images(64, seed=5)
    result = quantize_int8(conv_net(), {"x": x},
                           Int8Options(device="x86_64-workstation",
                                       speed=SpeedSettings(rounds=3, warmup=1)))
    speed = result.record["speed"]
    assert speed["engine"] == "onnxruntime" and speed["points"][0]["threads"] == 1
    assert speed["faster_than_fp32"] == result.speed.faster
    assert speed["host"].startswith("x86_64") or speed["host"].startswith("aarch64")


def test_bad_settings_are_refused():
    with pytest.raises(ConversionError, match="threads"):
        SpeedSettings(threads=(0,))
    with pytest.raises(ConversionError, match="rounds"):
        SpeedSettings(rounds=1)
