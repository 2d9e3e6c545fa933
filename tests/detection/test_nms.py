"""NMS (hard class-aware/agnostic, weighted) against a plain greedy loop written here and
against OpenCV's cv2.dnn.NMSBoxes / NMSBoxesBatched, on thousands of random boxes.

torchvision is not installable beside torch 2.13.0 here, so its semantics are checked by
the reference loop below, written from torchvision's documented contract: visit boxes by
descending score, drop every later box whose IoU with a kept one is > iou_threshold.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.runtime.ops.vision.nms import iou_matrix, nms, weighted_nms


def random_boxes(n, seed, extent=1000.0, clusters=None):
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.uniform(0, extent, (clusters, 2))
        sizes = rng.uniform(10, 200, (clusters, 2))
        k = rng.integers(0, clusters, n)
        c = centres[k] + rng.normal(0, 8, (n, 2))
        s = sizes[k] * rng.uniform(0.7, 1.3, (n, 2))
    else:
        c = rng.uniform(0, extent, (n, 2))
        s = rng.uniform(2, 150, (n, 2))
    boxes = np.concatenate([c - s / 2, c + s / 2], 1)
    return boxes, rng.uniform(0, 1, n), rng.integers(0, 7, n)


def reference_nms(boxes, scores, thr, classes=None):
    """The plain greedy loop (one box at a time), IoU > thr suppresses."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        ok = True
        for j in kept:
            if classes is not None and classes[i] != classes[j]:
                continue
            if _iou(boxes[i], boxes[j]) > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_weighted(boxes, scores, thr):
    """MediaPipe's WeightedNonMaxSuppression, written as it reads."""
    remaining = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    out = []
    while remaining:
        top = remaining[0]
        cluster = [i for i in remaining if _iou(boxes[top], boxes[i]) > thr or i == top]
        remaining = [i for i in remaining if i not in cluster]
        w = np.array([scores[i] for i in cluster])
        out.append((top, (np.array([boxes[i] for i in cluster]) * w[:, None]).sum(0) / w.sum()))
    return out


@pytest.mark.parametrize("seed, clusters, thr", [(0, None, 0.5), (1, 40, 0.45), (2, 15, 0.3),
                                                 (3, None, 0.0), (4, 60, 0.7)])
def test_hard_nms_equals_the_greedy_loop(seed, clusters, thr):
    # uniform boxes mostly survive, so the pure-Python reference is O(N^2): fewer of them
    boxes, scores, classes = random_boxes(2000 if clusters else 1000, seed, clusters=clusters)
    bl, sl, cl = boxes.tolist(), scores.tolist(), classes.tolist()
    assert nms(boxes, scores, thr).tolist() == reference_nms(bl, sl, thr)
    assert nms(boxes, scores, thr, classes).tolist() == reference_nms(bl, sl, thr, cl)


def test_hard_nms_equals_opencv_on_thousands_of_boxes():
    cv2 = pytest.importorskip("cv2")
    for seed in range(3):
        boxes, scores, classes = random_boxes(5000, seed + 10, clusters=200)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        ref = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, 0.5)).ravel()
        ours = nms(boxes, scores, 0.5)
        assert len(ours) > 500 and ours.tolist() == ref.tolist()
        ref_b = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(),
                                                   classes.tolist(), 0.0, 0.5)).ravel()
        # NMSBoxesBatched returns the kept indices by descending score, as we do
        assert nms(boxes, scores, 0.5, classes).tolist() == ref_b.tolist()


def test_threshold_is_strict_and_ties_go_to_the_lower_index():
    # Two boxes with IoU exactly 0.5: 0.5 does not suppress (IoU > thr suppresses)
    boxes = np.array([[0, 0, 3, 1], [1, 0, 4, 1], [0, 0, 3, 1]], float)
    assert _iou(boxes[0], boxes[1]) == 0.5
    assert nms(boxes[:2], [0.9, 0.8], 0.5).tolist() == [0, 1]
    assert nms(boxes[:2], [0.9, 0.8], 0.49).tolist() == [0]
    # equal scores: the earlier index is visited first (stable, as OpenCV)
    assert nms(boxes[[0, 2]], [0.7, 0.7], 0.5).tolist() == [0]
    assert nms(boxes, [0.7, 0.7, 0.7], 0.5, max_keep=1).tolist() == [0]


def test_large_dense_input_takes_the_bounded_memory_path(monkeypatch):
    from edgepack.runtime.ops.vision import nms as module
    boxes, scores, classes = random_boxes(1500, 7, clusters=30)
    fast = nms(boxes, scores, 0.45, classes)
    monkeypatch.setattr(module, "PAIR_LIMIT", 10)
    assert nms(boxes, scores, 0.45, classes).tolist() == fast.tolist()
    monkeypatch.setattr(module, "MAX_WAVES", 1)       # the one-at-a-time tail of _resolve
    monkeypatch.setattr(module, "PAIR_LIMIT", 4_000_000)
    assert nms(boxes, scores, 0.45, classes).tolist() == fast.tolist()


@pytest.mark.parametrize("seed, limit", [(5, 4_000_000), (6, 10)])
def test_weighted_nms_equals_mediapipe_loop(seed, limit, monkeypatch):
    from edgepack.runtime.ops.vision import nms as module
    monkeypatch.setattr(module, "PAIR_LIMIT", limit)
    boxes, scores, _ = random_boxes(600, seed, clusters=25)
    index, blended, _ = weighted_nms(boxes, scores, 0.3)
    ref = reference_weighted(boxes.tolist(), scores.tolist(), 0.3)
    assert index.tolist() == [top for top, _ in ref]
    np.testing.assert_allclose(blended, np.array([b for _, b in ref]), rtol=0, atol=1e-9)
    keypoints = np.repeat(((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None], 3, axis=1)
    _, blended2, points = weighted_nms(boxes, scores, 0.3, keypoints=keypoints)
    np.testing.assert_allclose(points[:, 0], (blended2[:, :2] + blended2[:, 2:]) / 2, atol=1e-9)


def test_iou_matrix_by_hand():
    a = np.array([[0, 0, 2, 2], [5, 5, 6, 6]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [0, 0, 0, 0]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 7, 1.0, 0.0], [0.0, 0.0, 0.0]])


def test_sweep_keeps_tiny_overlaps_of_far_class_bands_and_odd_coordinates():
    # class ids far from 0 shift the x bands to ~1e12: a 1e-7 px overlap must still count
    boxes = np.array([[0, 0, 10, 10], [10 - 1e-7, 0, 20, 10], [5, 0, 15, 10],
                      [0, 0, 10, 10]], float)
    scores = [0.9, 0.8, 0.7, 0.6]
    classes = np.array([10**9, 10**9, 3, 3])
    ref = reference_nms(boxes.tolist(), scores, 0.0, classes.tolist())
    assert ref == [0, 2] and nms(boxes, scores, 0.0, classes).tolist() == ref
    # nan / inf coordinates take the exact loop: same answer as the reference
    odd = np.array([[0, 0, np.inf, 10], [1, 1, 5, 5], [np.nan, 0, 4, 4], [2, 2, 6, 6]])
    for cls in (None, [0, 0, 1, 0]):
        assert nms(odd, [0.9, 0.8, 0.7, 0.6], 0.3, cls).tolist() == \
            reference_nms(odd.tolist(), [0.9, 0.8, 0.7, 0.6], 0.3, cls)


@pytest.mark.parametrize("seed", [0, 1])
def test_few_boxes_per_class_pair_within_classes_as_the_references(seed):
    # YOLO-like candidates: many classes, a handful of boxes each (the every-pair-inside-
    # a-class path); crowded classes take the x sweep (the tests above)
    boxes, scores, _ = random_boxes(400, seed + 20, clusters=50)
    classes = np.random.default_rng(seed).integers(0, 80, len(boxes))
    ref = reference_nms(boxes.tolist(), scores.tolist(), 0.45, classes.tolist())
    assert nms(boxes, scores, 0.45, classes).tolist() == ref
    cv2 = pytest.importorskip("cv2")
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    assert np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(),
                                              0.0, 0.45)).ravel().tolist() == ref


def test_geometry_boxes_to_source_equals_the_map_written_out():
    # Geometry.boxes_to_source (the nms step's map back to the photo) in ufuncs on the
    # whole array equals the map written per coordinate with np.clip: the same values
    # (out-of-image, nan and inf coordinates alike); only the sign of a zero on the image
    # edge may differ (np.maximum gives +0.0 where np.clip may keep -0.0: -0.0 == 0.0)
    from edgepack.runtime.ops.trace import Geometry

    def written_out(g, boxes):
        out = np.empty_like(boxes)
        for axis, (scale, offset, size) in enumerate(zip(g.scale[::-1], g.offset[::-1],
                                                         g.source_size[::-1])):
            out[:, axis::2] = (boxes[:, axis::2] - offset) / scale
            np.clip(out[:, axis::2], 0.0, size, out=out[:, axis::2])
        return out

    rng = np.random.default_rng(5)
    geometries = [Geometry.of((480, 640)).resized(480, 640).padded(80, 0, 640, 640),
                  Geometry.of((375, 500)).resized(256, 341).cropped(16, 58, 224, 224),
                  Geometry.of((720, 1280)).padded(0, 0, 1280, 1280).resized(640, 640)]
    for g in geometries:
        boxes = rng.uniform(-50, 700, (300, 4))
        boxes[:3] = [[-0.0, 0.0, 1.0, 2.0], [np.nan, 1.0, np.inf, -np.inf], [0.0] * 4]
        got, want = g.boxes_to_source(boxes), written_out(g, boxes)
        assert np.array_equal(got, want, equal_nan=True) and got.dtype == want.dtype
        assert (got == want)[~np.isnan(want)].all() and np.isnan(got).sum() == 1
        assert not np.signbit(got[~np.isnan(got)]).any()       # never a -0.0 in the JSON
        assert g.boxes_to_source(boxes[:0]).shape == (0, 4)
