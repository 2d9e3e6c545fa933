"""Decoders against independent decodes written here: YOLOv5/v8, SSD anchors (count and
hand-computed anchors, MediaPipe box/keypoint decoding), boxes; results in source pixels."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgepack.runtime.errors import PipelineError
from edgepack.runtime.ops import Context, compile_steps
from edgepack.runtime.ops.trace import Geometry, Trace
from edgepack.runtime.ops.vision import AnchorOptions, generate_anchors
from edgepack.runtime.specs import TensorSpec

IMAGE = TensorSpec("images", (1, 3, 640, 640), "float32", "NCHW")


def run_decode(steps, outputs, specs, labels=None, geometry=None, inputs=(IMAGE,)):
    ctx = Context(labels=labels, inputs=inputs, outputs=specs)
    trace = Trace()
    if geometry is not None:
        trace.geometry[inputs[0].name] = geometry
    return compile_steps(steps, ctx, "decode", kind="decode")(outputs, trace)


def yolo_v8_reference(out, thr):
    """Per box: best class, score > thr, xywh centre -> corners (independent loop)."""
    rows = []
    a = out[0]
    for n in range(a.shape[1]):
        scores = a[4:, n]
        c = int(np.argmax(scores))
        if scores[c] > thr:
            cx, cy, w, h = (float(v) for v in a[:4, n])
            rows.append((n, c, float(scores[c]), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
    return rows


def yolo_v5_reference(out, thr):
    rows = []
    for n, row in enumerate(out[0]):
        obj = float(row[4])
        if obj <= thr:
            continue
        conf = row[5:] * obj
        c = int(np.argmax(conf))
        if conf[c] > thr:
            cx, cy, w, h = (float(v) for v in row[:4])
            rows.append((n, c, float(conf[c]), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
    return rows


def fake_yolo(seed, n=8400, classes=80, v5=False):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 640, (n, 2))
    wh = rng.uniform(4, 200, (n, 2))
    scores = rng.uniform(0, 1, (n, classes)) ** 8     # mostly small, some above 0.25
    if v5:
        obj = rng.uniform(0, 1, (n, 1))
        return np.concatenate([xy, wh, obj, scores], 1)[None].astype(np.float32)
    return np.concatenate([xy, wh, scores], 1).T[None].astype(np.float32)


def candidates_of(result):
    c = result["candidates"].images[0]
    return c


@pytest.mark.parametrize("seed", [0, 1])
def test_yolo_v8_decode_equals_independent_decode(seed):
    out = fake_yolo(seed, n=2000, classes=20)
    spec = TensorSpec("output0", (1, 24, 2000), "float32")
    got = candidates_of(run_decode([{"op": "yolo", "score_threshold": 0.25}],
                                   {"output0": out}, [spec]))
    ref = yolo_v8_reference(out, 0.25)
    assert len(ref) > 50 and len(got) == len(ref)
    np.testing.assert_array_equal(got.classes, [r[1] for r in ref])
    np.testing.assert_allclose(got.scores, [r[2] for r in ref], rtol=1e-6)
    np.testing.assert_allclose(got.boxes, [r[3] for r in ref], rtol=1e-6, atol=1e-4)
    # the transposed export [1, N, 4+C] decodes the same
    got_t = candidates_of(run_decode([{"op": "yolo", "score_threshold": 0.25}],
                                     {"output0": out.transpose(0, 2, 1)}, [spec]))
    np.testing.assert_array_equal(got_t.boxes, got.boxes)


def test_yolo_v8_both_memory_layouts_decode_identically_and_as_the_reference():
    # engines return [1, 4+C, N] C-contiguous (class rows contiguous along N: row maxima);
    # a transposed [1, N, 4+C] export has the classes contiguous (compare-first path)
    out = fake_yolo(2, n=3000, classes=30)
    out[0, 10, 7] = np.nan                  # a nan class score beside a hit, and alone
    out[0, 4:, 11] = np.nan
    out[0, 12, 7] = 0.9
    spec = TensorSpec("output0", (1, 34, 3000), "float32")
    step = [{"op": "yolo", "score_threshold": 0.25}]
    rows = candidates_of(run_decode(step, {"output0": np.ascontiguousarray(out)}, [spec]))
    boxes_major = np.ascontiguousarray(out.transpose(0, 2, 1)).transpose(0, 2, 1)
    assert boxes_major[0, 4:].strides[0] == 4
    cols = candidates_of(run_decode(step, {"output0": boxes_major}, [spec]))
    ref = [r for r in yolo_v8_reference(np.nan_to_num(out, nan=-1.0), 0.25)
           if r[0] not in (7, 11)]          # numpy max() is nan where a nan is: dropped
    assert len(ref) > 100 and len(rows) == len(ref)
    for got in (rows, cols):
        np.testing.assert_array_equal(got.classes, [r[1] for r in ref])
        np.testing.assert_array_equal(got.scores, np.float32([r[2] for r in ref]))
        np.testing.assert_array_equal(got.boxes, [r[3] for r in ref])


def test_yolo_v5_decode_equals_independent_decode():
    out = fake_yolo(3, n=3000, classes=10, v5=True)
    spec = TensorSpec("output", (1, 3000, 15), "float32")
    got = candidates_of(run_decode([{"op": "yolo", "version": "v5", "score_threshold": 0.2}],
                                   {"output": out}, [spec]))
    ref = yolo_v5_reference(out, 0.2)
    assert len(ref) > 20 and len(got) == len(ref)
    np.testing.assert_array_equal(got.classes, [r[1] for r in ref])
    np.testing.assert_allclose(got.scores, [r[2] for r in ref], rtol=1e-6)
    np.testing.assert_allclose(got.boxes, [r[3] for r in ref], rtol=1e-6, atol=1e-4)


def test_yolo_sigmoid_logits_and_multi_label():
    out = fake_yolo(4, n=500, classes=5)
    logits = out.copy()
    p = np.clip(out[0, 4:], 1e-6, 1 - 1e-6)
    logits[0, 4:] = np.log(p / (1 - p))
    spec = TensorSpec("o", (1, 9, 500), "float32")
    plain = candidates_of(run_decode([{"op": "yolo", "score_threshold": 0.1}], {"o": out}, [spec]))
    from_logits = candidates_of(run_decode([{"op": "yolo", "score_threshold": 0.1,
                                             "activation": "sigmoid"}], {"o": logits}, [spec]))
    np.testing.assert_array_equal(from_logits.classes, plain.classes)
    np.testing.assert_allclose(from_logits.scores, plain.scores, rtol=1e-4)
    multi = candidates_of(run_decode([{"op": "yolo", "score_threshold": 0.1,
                                       "multi_label": True}], {"o": out}, [spec]))
    assert len(multi) == int((out[0, 4:] > 0.1).sum()) > len(plain)


def test_yolo_to_detections_in_source_pixels_with_labels():
    # one box at the centre of a 640 letterboxed 480x640 photo: source y = (y - 80)
    out = np.zeros((1, 6, 3), np.float32)
    out[0, :, 0] = [320, 320, 100, 50, 0.9, 0.1]
    out[0, :, 1] = [322, 321, 100, 50, 0.8, 0.0]     # suppressed by the first
    out[0, :, 2] = [10, 90, 20, 20, 0.05, 0.7]
    g = Geometry.of((480, 640)).resized(480, 640).padded(80, 0, 640, 640)
    result = run_decode([{"op": "yolo"}, {"op": "nms", "iou": 0.5}], {"o": out},
                        [TensorSpec("o", (1, 6, 3), "float32")], labels=["cat", "dog"],
                        geometry=g)
    dets = result["detections"]
    assert [d["label"] for d in dets] == ["cat", "dog"]
    np.testing.assert_allclose(dets[0]["box"], [270, 215, 370, 265])
    np.testing.assert_allclose(dets[1]["box"], [0, 0, 20, 20])   # clipped at the top/left
    assert dets[0]["score"] == pytest.approx(0.9) and dets[1]["class"] == 1
    denied = run_decode([{"op": "yolo"}, {"op": "nms", "exclude": ["cat"]}], {"o": out},
                        [TensorSpec("o", (1, 6, 3), "float32")], labels=["cat", "dog"],
                        geometry=g)["detections"]
    assert [d["label"] for d in denied] == ["dog"]
    allowed = run_decode([{"op": "yolo"}, {"op": "nms", "classes": [0], "max_detections": 1}],
                         {"o": out}, [TensorSpec("o", (1, 6, 3), "float32")],
                         labels=["cat", "dog"], geometry=g)["detections"]
    assert [d["label"] for d in allowed] == ["cat"]


FACE = dict(input_size=[128, 128], strides=[8, 16, 16, 16], min_scale=0.1484375,
            max_scale=0.75, aspect_ratios=[1.0], offset=[0.5, 0.5], fixed_anchor_size=True,
            interpolated_scale_aspect_ratio=1.0)


def test_ssd_anchor_count_and_hand_computed_anchors():
    a = generate_anchors(AnchorOptions((128, 128), (8, 16, 16, 16)))
    assert a.shape == (896, 4)                          # 16*16*2 + 8*8*6
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(a[1], [0.5 / 16, 0.5 / 16, 1, 1])    # 2 anchors per location
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16, 1, 1])    # x moves first
    np.testing.assert_allclose(a[32], [0.5 / 16, 1.5 / 16, 1, 1])   # next row
    np.testing.assert_allclose(a[512:518], [[0.5 / 8, 0.5 / 8, 1, 1]] * 6)
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8, 1, 1])
    # sizes when not fixed: layer scales min + (max-min)*i/3, interpolated sqrt(s_i s_i+1)
    sized = generate_anchors(AnchorOptions((128, 128), (8, 16, 16, 16), fixed_anchor_size=False))
    s0, s1 = 0.1484375, 0.1484375 + (0.75 - 0.1484375) / 3
    np.testing.assert_allclose(sized[0, 2:], [s0, s0], rtol=1e-6)
    np.testing.assert_allclose(sized[1, 2:], [math.sqrt(s0 * s1)] * 2, rtol=1e-6)
    np.testing.assert_allclose(sized[517, 2:], [math.sqrt(0.75 * 1.0)] * 2, rtol=1e-6)
    # aspect ratio 2: w = s*sqrt(2), h = s/sqrt(2); one layer: scale = (min+max)/2
    one = generate_anchors(AnchorOptions((64, 64), (32,), aspect_ratios=(2.0,),
                                         fixed_anchor_size=False,
                                         interpolated_scale_aspect_ratio=0.0))
    s = (0.1484375 + 0.75) / 2
    assert one.shape == (4, 4)
    np.testing.assert_allclose(one[0], [0.25, 0.25, s * math.sqrt(2), s / math.sqrt(2)], rtol=1e-6)


def mediapipe_decode(raw_boxes, raw_scores, anchors, scale=128.0, keypoints=6):
    """TensorsToDetections (reverse_output_order, sigmoid, clip 100), one anchor at a time."""
    rows = []
    for i, a in enumerate(anchors):
        score = 1 / (1 + math.exp(-max(-100.0, min(100.0, float(raw_scores[i, 0])))))
        if score < 0.5:
            continue
        r = raw_boxes[i]
        cx = r[0] / scale * a[2] + a[0]
        cy = r[1] / scale * a[3] + a[1]
        w, h = r[2] / scale * a[2], r[3] / scale * a[3]
        kps = [[(r[4 + 2 * k] / scale * a[2] + a[0]) * 128,
                (r[5 + 2 * k] / scale * a[3] + a[1]) * 128] for k in range(keypoints)]
        rows.append((score, [(cx - w / 2) * 128, (cy - h / 2) * 128, (cx + w / 2) * 128,
                             (cy + h / 2) * 128], kps))
    return rows


def test_ssd_decode_equals_mediapipe_decode_with_generated_or_stored_anchors():
    rng = np.random.default_rng(0)
    raw_boxes = rng.normal(0, 10, (1, 896, 16)).astype(np.float32)
    raw_boxes[..., 2:4] = rng.uniform(5, 40, (1, 896, 2))
    raw_scores = rng.normal(-2, 2, (1, 896, 1)).astype(np.float32)
    specs = [TensorSpec("regressors", (1, 896, 16), "float32"),
             TensorSpec("classificators", (1, 896, 1), "float32")]
    inputs = (TensorSpec("input", (1, 128, 128, 3), "float32", "NHWC"),)
    step = {"op": "ssd_anchors", "boxes": "regressors", "scores": "classificators",
            "anchors": FACE, "keypoints": 6}
    out = run_decode([step], {"regressors": raw_boxes, "classificators": raw_scores}, specs,
                     inputs=inputs)
    c = out["candidates"].images[0]
    anchors = generate_anchors(AnchorOptions((128, 128), (8, 16, 16, 16)))
    ref = mediapipe_decode(raw_boxes[0], raw_scores[0], anchors)
    assert len(ref) > 100 and len(c) == len(ref)
    np.testing.assert_allclose(c.scores, [r[0] for r in ref], rtol=1e-5)
    np.testing.assert_allclose(c.boxes, [r[1] for r in ref], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(c.keypoints, [r[2] for r in ref], rtol=1e-5, atol=1e-3)
    # the same anchors stored as an .npy asset
    from edgepack.runtime.ops.vision.anchors import anchors_to_npy
    ctx = Context(inputs=inputs, outputs=specs, assets={"anchors": anchors_to_npy(anchors)})
    stored = compile_steps([{**step, "anchors": "anchors"}], ctx, "decode", kind="decode")(
        {"regressors": raw_boxes, "classificators": raw_scores}, Trace())
    np.testing.assert_array_equal(stored["candidates"].images[0].boxes, c.boxes)


def test_ssd_anchor_count_must_match_the_output():
    specs = [TensorSpec("regressors", (1, 900, 16), "float32"),
             TensorSpec("classificators", (1, 900, 1), "float32")]
    with pytest.raises(PipelineError, match="896 anchors but output 'regressors' has 900"):
        compile_steps([{"op": "ssd_anchors", "boxes": "regressors", "scores": "classificators",
                        "anchors": FACE}], Context(outputs=specs), "decode", kind="decode")


def test_boxes_decoder_tf_od_api_layout_with_count():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.4, 0.4]]],
                     np.float32)                           # y0, x0, y1, x1 normalized
    outputs = {"b": boxes, "s": np.array([[0.9, 0.8, 0.7]], np.float32),
               "c": np.array([[2.0, 0.0, 1.0]], np.float32), "n": np.array([2.0], np.float32)}
    specs = [TensorSpec(n, (1, 3, 4) if n == "b" else (1, 3), "float32") for n in "bsc"] + \
        [TensorSpec("n", (1,), "float32")]
    inputs = (TensorSpec("x", (1, 300, 300, 3), "uint8", "NHWC"),)
    g = Geometry.of((600, 900)).resized(300, 300)
    dets = run_decode([{"op": "boxes", "boxes": "b", "scores": "s", "classes": "c", "count": "n",
                        "format": "yxyx"}, {"op": "nms", "mode": "none"}], outputs, specs,
                      labels=["a", "b", "c"], geometry=g, inputs=inputs)["detections"]
    assert [d["label"] for d in dets] == ["c", "a"]          # count = 2: the third is padding
    np.testing.assert_allclose(dets[0]["box"], [0.2 * 900, 0.1 * 600, 0.6 * 900, 0.5 * 600],
                               rtol=1e-6)


def test_nms_without_a_decoder_is_a_clear_error():
    with pytest.raises(PipelineError, match="nms needs a detection decoder"):
        run_decode([{"op": "nms"}], {"o": np.zeros((1, 6, 3))},
                   [TensorSpec("o", (1, 6, 3), "float32")])


@pytest.mark.parametrize("step, words", [
    ({"op": "yolo", "version": "v9"}, "version"),
    ({"op": "yolo", "input": "camera"}, "'input' 'camera' is not one of the model's inputs"),
    ({"op": "nms", "iou": 1.5}, "iou"),
    ({"op": "nms", "classes": ["zebra"]}, "neither a class index nor a label"),
    ({"op": "yolo", "classes": 3}, "needs 7 values per box"),
    ({"op": "ssd_anchors", "boxes": "o", "scores": "o", "anchors": 3}, "anchors"),
    ({"op": "ssd_anchors", "boxes": "o", "scores": "o", "anchors": {"input_size": [8, 8]}},
     "strides"),
])
def test_bad_decoder_params_fail_at_load(step, words):
    with pytest.raises(PipelineError, match=words):
        compile_steps([step], Context(outputs=[TensorSpec("o", (1, 6, 30), "float32")],
                                      labels=["a"]), "decode", kind="decode")


def test_boxes_decoder_torchvision_style_unbatched_pixels_and_score_matrix():
    boxes = np.array([[10, 20, 50, 60], [12, 22, 52, 62], [100, 100, 120, 130]], np.float32)
    specs = [TensorSpec("boxes", (3, 4), "float32"), TensorSpec("scores", (3,), "float32"),
             TensorSpec("labels", (3,), "int64")]
    inputs = (TensorSpec("x", (1, 3, 200, 200), "float32", "NCHW"),)
    dets = run_decode([{"op": "boxes", "boxes": "boxes", "scores": "scores", "classes": "labels",
                        "coordinates": "pixels", "class_offset": -1},
                       {"op": "nms", "iou": 0.5}],
                      {"boxes": boxes, "scores": np.array([0.9, 0.8, 0.7], np.float32),
                       "labels": np.array([1, 1, 2])}, specs, labels=["a", "b"],
                      inputs=inputs)["detections"]
    assert [(d["class"], d["label"]) for d in dets] == [(0, "a"), (1, "b")]
    np.testing.assert_allclose(dets[0]["box"], [10, 20, 50, 60])
    # an unbatched [N, C] score matrix: each box's best class
    matrix = np.array([[0.1, 0.9], [0.8, 0.1], [0.3, 0.2]], np.float32)
    dets = run_decode([{"op": "boxes", "boxes": "boxes", "scores": "scores",
                        "coordinates": "pixels"}, {"op": "nms", "mode": "none"}],
                      {"boxes": boxes, "scores": matrix},
                      [specs[0], TensorSpec("scores", (3, 2), "float32")], inputs=inputs)
    assert [(d["class"], round(d["score"], 2)) for d in dets["detections"]] == \
        [(1, 0.9), (0, 0.8), (0, 0.3)]


def test_a_bad_anchors_asset_is_a_load_time_error():
    specs = [TensorSpec("r", (1, 896, 16), "float32"), TensorSpec("c", (1, 896, 1), "float32")]
    for data, words in ((b"not numpy", "not a readable .npy"), (b"", "not a readable .npy")):
        with pytest.raises(PipelineError, match=words):
            compile_steps([{"op": "ssd_anchors", "boxes": "r", "scores": "c", "anchors": "a"}],
                          Context(outputs=specs, assets={"a": data}), "decode", kind="decode")


def test_yolo_nms_on_a_batch_of_two_gives_one_list_per_image_as_each_image_alone():
    # a batch of one is split without list() (one list of detections); a batch of two gives
    # one list per image, each the same as that image decoded alone
    spec = TensorSpec("output0", (-1, 24, 1500), "float32")
    steps = [{"op": "yolo", "score_threshold": 0.25}, {"op": "nms", "iou": 0.45}]
    labels = [f"c{i}" for i in range(20)]
    images = [fake_yolo(seed, n=1500, classes=20) for seed in (4, 5)]
    geometry = Geometry.of((480, 640)).resized(480, 640).padded(80, 0, 640, 640)
    alone = [run_decode(steps, {"output0": x}, [spec], labels, geometry)["detections"]
             for x in images]
    both = run_decode(steps, {"output0": np.concatenate(images)}, [spec], labels,
                      geometry)["detections"]
    assert all(isinstance(d, dict) for d in alone[0]) and len(alone[0]) > 5
    assert both == alone and alone[0] != alone[1]
    for d in alone[0]:
        assert d["label"] == labels[d["class"]] and 0 <= d["box"][1] <= d["box"][3] <= 480
