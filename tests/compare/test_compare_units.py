"""The layers of compare on their own: config, scoring, error bins, slower-than-fp32, pick,
SVG/HTML rendering, and data errors. Fast: synthetic numbers, no conversion."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgepack.benchmark import summarize
from edgepack.compare import CompareConfig, CompareError, render_html, render_table
from edgepack.compare.accuracy import Accuracy, output_error, score
from edgepack.compare.data import load_dataset
from edgepack.compare.latency import Latency
from edgepack.compare.pick import choose, is_slower, mark_slower_than_fp32, status_for
from edgepack.compare.result import FAILED, OK, CompareResult, Pick, Row
from edgepack.compare import svg
from edgepack.runtime.errors import EdgepackError


def latency(p50_ms: float, rounds: list[float] | None = None) -> Latency:
    rounds = rounds or [p50_ms] * 10
    times = np.repeat(np.asarray(rounds) / 1e3, 5)
    return Latency(summarize(times, 0, 2), tuple(times * 1e3), tuple(rounds))


def row(target, mode, p50, drop=0.0, check_ok=True, rounds=None, size=1000) -> Row:
    err = output_error("logits", np.zeros(20), np.linspace(0, drop / 10, 20))
    acc = Accuracy(100, 0.95 - drop / 100, 0.95, 1.0, drop, (err,))
    status, reason = status_for(drop, 1.0, "accuracy")
    return Row(target, mode, status, reason, path=Path(f"/b/{target}-{mode}.edgepack"),
               bundle_bytes=size, model_bytes=size - 100, latency=latency(p50, rounds),
               accuracy=acc, check={"ok": check_ok, "errors": [] if check_ok else ["too big"],
                                    "warnings": []})


def test_config_refuses_bad_options_before_work():
    for kwargs, words in [(dict(targets=("onnx", "coreml")), "coreml"),
                          (dict(modes=("int4",)), "int4"), (dict(modes=()), "no modes"),
                          (dict(max_drop=-1), "0..100"), (dict(holdout=1.0), "holdout"),
                          (dict(on_device=True), "--device"),
                          (dict(modes=("int8", "int8")), "twice")]:
        with pytest.raises(CompareError, match=words):
            CompareConfig(**kwargs)
    assert issubclass(CompareError, EdgepackError)
    assert CompareConfig(targets=["onnx"], modes=["none", "int8"]).combinations == [
        ("onnx", "none"), ("onnx", "int8")]


def test_score_counts_exactly():
    ref = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]           # source picks 0,1,2,3,0
    got = np.eye(4, dtype=np.float32)[[0, 1, 2, 0, 0]]           # bundle picks 0,1,2,0,0
    labels = np.array([0, 1, 3, 3, 0])                           # source right 4/5, bundle 3/5
    acc = score([ref], [got], labels)
    assert (acc.accuracy, acc.source_accuracy, acc.top1_agreement) == (0.6, 0.8, 0.8)
    assert acc.drop_points == pytest.approx(20.0)
    unlabelled = score([ref], [got], None)
    assert unlabelled.accuracy is None and unlabelled.drop_points == pytest.approx(20.0)
    assert score([np.ones(5)], [np.ones(5)], None).drop_points is None  # no class scores


def test_output_error_bins_by_decade():
    ref = np.zeros(6)
    got = np.array([0.0, 0.0, 5e-9, 3e-4, 0.5, 1e3])
    err = output_error("y", ref, got)
    assert err.zero == 2 and err.max_abs == 1e3
    counts = list(err.histogram)
    assert counts[0] == 1                   # < 1e-8
    assert counts[5] == 1                   # [1e-4, 1e-3)
    assert counts[8] == 1                   # [1e-1, 1)
    assert counts[-1] == 1                  # >= 1e2
    assert sum(counts) == 4


def test_slower_than_fp32_needs_consistent_rounds():
    fp32 = latency(1.0, [1.0] * 10)
    noisy = latency(1.05, [1.3, 0.9, 1.2, 0.95, 1.1, 0.9, 1.2, 0.95, 1.05, 0.98])
    consistent = latency(1.2, [1.2] * 9 + [0.9])
    assert not is_slower(noisy, fp32)      # slower in 5 of 10 rounds: noise, not a finding
    assert is_slower(consistent, fp32)
    assert not is_slower(latency(0.9), fp32)
    rows = mark_slower_than_fp32([row("onnx", "none", 1.0), row("onnx", "int8", 1.2,
                                                                rounds=[1.2] * 10)])
    assert rows[1].slower_than_fp32 == pytest.approx(1.2)
    assert "slower than fp32" in rows[1].notes[0] and rows[0].slower_than_fp32 is None


def test_pick_is_fastest_within_budget_and_accepted():
    rows = mark_slower_than_fp32([
        row("onnx", "none", 1.0),
        row("onnx", "int8", 1.5, rounds=[1.5] * 10),      # quantized but slower: never picked
        row("tflite", "none", 0.9),
        row("tflite", "int8", 0.3, drop=2.5),             # fastest, outside the 1-point budget
        row("tflite", "dynamic", 0.5, check_ok=False),    # device check refuses it
        row("tflite", "fp16", 0.7),
        Row("onnx", "fp16", FAILED, "conversion: unsupported op"),
    ])
    pick = choose(rows, "rpi4b")
    assert pick.key == "tflite/fp16"
    why = dict(pick.rejected)
    assert "drop 2.50 points > budget 1" in why["tflite/int8"]
    assert "check refuses" in why["tflite/dynamic"]
    assert "slower than fp32" in why["onnx/int8"]
    assert "unsupported op" in why["onnx/fp16"]
    assert "slower" in why["tflite/none"] and "slower" in why["onnx/none"]
    # Without a device the check does not apply: the refused bundle is then the fastest.
    assert choose(rows, None).key == "tflite/dynamic"


def test_pick_none_when_nothing_qualifies():
    pick = choose([row("onnx", "int8", 0.3, drop=3.0)], None)
    assert pick.key is None and pick.path is None and "budget" in pick.reason


def _result(rows, pick=None) -> CompareResult:
    return CompareResult("digits", "rpi4b", 2, {"machine": "x86_64", "cpus": 2}, 1.0,
                         "accuracy", 0.95, 100, 200, tuple(rows),
                         pick or choose(rows, "rpi4b"), 50)


def test_table_marks_best_and_states_findings():
    rows = mark_slower_than_fp32([row("onnx", "none", 1.0, size=2000),
                                  row("onnx", "int8", 1.4, rounds=[1.4] * 10, size=700),
                                  row("tflite", "none", 0.8, drop=1.5, size=1900),
                                  Row("tflite", "int8", FAILED, "missing-dependency: no x")])
    text = render_table(_result(rows))
    lines = text.splitlines()
    assert "0.800*" in lines[3]            # fastest p50 (even though over budget)
    assert "0.7*" in lines[2]              # smallest file (KB)
    assert "onnx/int8: quantization made this model slower than fp32 here" in text
    assert "tflite/int8: missing-dependency: no x" in text
    assert "pick: onnx/none" in text and "not rpi4b latency" in text


def _parse(fragment: str) -> ET.Element:
    return ET.fromstring(fragment)


def test_svg_charts_are_well_formed_and_complete():
    ns = "{http://www.w3.org/2000/svg}"
    dist = _parse(svg.latency_distribution([("a", [1.0, 1.1, 1.2]), ("b", [2.0, 2.5])]))
    labels = [t.text for t in dist.iter(ns + "text")]
    assert "a" in labels and "b" in labels
    assert len([line for line in dist.iter(ns + "line")]) >= 4   # p50 + p99 per bundle
    scatter = _parse(svg.accuracy_scatter([("a", 1.0, 95.0, True), ("b", 0.5, 90.0, False)],
                                          93.0, "accuracy %"))
    assert len(list(scatter.iter(ns + "circle"))) == 5    # 2 points, pick ring, 2 in legend
    assert any("budget 93.00%" == t.text for t in scatter.iter(ns + "text"))
    hist = _parse(svg.error_histogram("a · y", 3, [1, 0, 2] + [0] * 8, [10.0 ** e for e in
                                                                       range(-8, 3)]))
    heights = [float(r.get("height")) for r in hist.iter(ns + "rect")]
    assert len(heights) == 12 and max(heights) > 0


def test_html_report_is_self_contained():
    rows = [row("onnx", "none", 1.0), row("tflite", "int8", 0.4, drop=2.0)]
    html = render_html(_result(rows))
    assert html.count("<svg") == 2 + 2     # latency, scatter, one error histogram per row
    assert "<script" not in html and "src=" not in html and "href=" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "Pick for rpi4b" in html and "onnx/none" in html


def test_data_errors_are_one_clear_error(tmp_path):
    with pytest.raises(CompareError, match="does not exist"):
        load_dataset(None, tmp_path / "missing.npz", CompareConfig())
    bad = tmp_path / "data.csv"
    bad.write_text("1,2")
    with pytest.raises(CompareError, match=".npy or .npz"):
        load_dataset(None, bad, CompareConfig())
    only = tmp_path / "only.npz"
    np.savez(only, labels=np.arange(3))
    with pytest.raises(CompareError, match="no input arrays"):
        load_dataset(None, only, CompareConfig())


def test_import_is_light():
    """Importing compare (and its CLI module) loads no framework, engine or converter."""
    import subprocess
    import sys
    code = ("import sys, edgepack.compare, edgepack.cli.compare_cmd; print(sorted(m for m in "
            "('torch', 'tensorflow', 'keras', 'onnx', 'onnxruntime', 'edgepack.converters') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
