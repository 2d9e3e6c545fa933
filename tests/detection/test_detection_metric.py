"""Detect bundles are judged by detections, not raw tensors or top-1, in conversion
validation, --accuracy-target and compare: a good detector passes (agreement >= 0.99), the
same detector with its boxes shifted fails with a message naming the detection numbers.

The detector is tests/detection/synthetic.py's tiny YOLO-style net, untrained (seeded):
its boxes and scores are arbitrary but deterministic, which is all agreement needs."""
from __future__ import annotations

import numpy as np
import pytest

from tests.detection import synthetic as s

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow     # ~10 s each quiet (three tiny conversions, one compare)

TASK = {"kind": "detect"}


@pytest.fixture(scope="module")
def detector():
    model = s.torch_detector()
    model.eval()
    x = np.random.default_rng(0).uniform(0, 1, (24, 3, 64, 64)).astype(np.float32)
    return model, x


def shift_boxes(outputs, dx=0.3):
    """The bundle's raw outputs with every box moved right by dx of the image width."""
    moved = [np.array(o, copy=True) for o in outputs]
    moved[0][:, 0] += dx
    return moved


def convert(model, x, out, **kwargs):
    import edgepack
    return edgepack.convert(model, out, target="onnx", validation_data=x,
                            example_inputs=(torch.from_numpy(x[:1]),), speed_check=False,
                            labels=s.LABELS, task=TASK, decode=s.DECODE, **kwargs)


def test_validation_compares_detections_and_a_shifted_detector_fails(detector, tmp_path,
                                                                     monkeypatch):
    from edgepack.converters import validation
    from edgepack.runtime.errors import ValidationError
    model, x = detector
    good = convert(model, x, tmp_path / "good.edgepack")
    task = good.validation["task"]
    assert task["metric"] == "detection" and task["source_detections"] >= len(x)
    # fp32 ONNX vs PyTorch: a score near the threshold may flip one detection of ~200
    assert task["agreement"] == min(task["recall"], task["precision"]) >= 0.99
    assert good.validation["detection_agreement"] == task["agreement"]
    assert "top1_agreement" not in good.validation

    original = validation.run_bundle
    monkeypatch.setattr(validation, "run_bundle", lambda *a, **k: shift_boxes(original(*a, **k)))
    with pytest.raises(ValidationError) as info:
        convert(model, x, tmp_path / "bad.edgepack")
    message = str(info.value)
    assert message.startswith("validation outside tolerance: detection recall ")
    assert "source detections matched at IoU >= 0.5" in message
    assert not (tmp_path / "bad.edgepack").exists()


def test_accuracy_target_gates_a_detector_by_detection_agreement(detector, tmp_path,
                                                                 monkeypatch):
    # The untrained net's int8 agrees with its float self on ~53% of detections (scores
    # near the threshold): below int8's default 0.9 recall/precision, above a 0.45 target,
    # which replaces those defaults; shifted boxes fall below it.
    from edgepack.converters import validation
    from edgepack.runtime.errors import ValidationError
    model, x = detector
    good = convert(model, x, tmp_path / "good.edgepack", quantize="int8", calibration_data=x,
                   accuracy_target=0.45)
    task = good.validation["task"]
    assert task["accuracy_target"] == 0.45 and good.validation["passed"]
    assert 0.45 <= task["agreement"] == min(task["recall"], task["precision"]) < 0.9
    assert task["tolerances"] == {"min_recall": 0.45, "min_precision": 0.45,
                                  "min_mean_iou": 0.8}

    original = validation.run_bundle
    monkeypatch.setattr(validation, "run_bundle",
                        lambda *a, **k: shift_boxes(original(*a, **k), dx=0.6))
    with pytest.raises(ValidationError) as info:
        convert(model, x, tmp_path / "bad.edgepack", quantize="int8", calibration_data=x,
                accuracy_target=0.45)
    assert "< accuracy target 0.45 (recall " in str(info.value)


def test_compare_measures_detection_agreement(detector, tmp_path, monkeypatch):
    from edgepack.compare import CompareConfig, LatencyConfig, compare, render_table
    from edgepack.compare import accuracy
    model, x = detector
    config = CompareConfig(targets=("onnx",), modes=("none",), memory=False, holdout=0.5,
                           latency=LatencyConfig(rounds=1, block=2, warmup=0), name="det",
                           task=TASK, decode=tuple(s.DECODE), class_names=tuple(s.LABELS))
    result = compare(model, x, config)
    assert result.metric == "detection_agreement"
    row = result.rows[0]
    assert row.status == "ok", row.reason
    agreement = row.accuracy.detection["agreement"]
    assert agreement >= 0.99 and row.accuracy.drop_points == pytest.approx((1 - agreement) * 100)
    assert row.accuracy.top1_agreement is None
    assert "detection agreement with the source" in render_table(result)

    original = accuracy.run_bundle_raw

    def shifted(*args, **kwargs):
        outputs, names = original(*args, **kwargs)
        return shift_boxes(outputs), names
    monkeypatch.setattr(accuracy, "run_bundle_raw", shifted)
    row = compare(model, x, config).rows[0]
    assert row.status == "over-budget"
    assert row.reason.startswith("detection agreement drop ")
    assert row.accuracy.detection["recall"] < 0.5
