"""Class-aware NMS by class leaders (runtime/ops/vision/leaders.py) gives the same kept
indices as the greedy reference, OpenCV's NMSBoxesBatched and the all-pairs path, through
each of its branches: one numpy round + the Python remainder, numpy rounds only, and the
hand-back of crowded classes to the all-pairs path."""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.runtime.ops.vision import leaders, nms as module
from edgepack.runtime.ops.vision.nms import nms

from .test_nms import random_boxes, reference_nms

# (PYTHON_LIMIT, MAX_ROUNDS, SHRINK): the default; numpy rounds only, to the end; one
# round then the all-pairs path for the rest; Python after the first round (thr >= 0),
# else the all-pairs path
BRANCHES = [(32, 256, 1 / 64), (0, 10**6, 0.0), (0, 1, 0.0), (10**6, 3, 1.0)]


def yolo_candidates(seed, objects=20, per_object=10, classes=80):
    """Candidates as a YOLO decoder leaves them: tight clusters, one class per object."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(60, 580, (objects, 2)).repeat(per_object, 0)
    size = rng.uniform(30, 200, (objects, 2)).repeat(per_object, 0)
    c = centre + rng.normal(0, 4, centre.shape)
    s = size * rng.uniform(0.85, 1.15, size.shape)
    boxes = np.concatenate([c - s / 2, c + s / 2], 1)
    return (boxes, rng.uniform(0.3, 0.95, len(boxes)).astype(np.float32),
            rng.integers(0, classes, objects).repeat(per_object))


def pairs_only(monkeypatch):
    """Route class-aware nms() through the all-pairs path for every box."""
    monkeypatch.setattr(module, "class_leaders",
                        lambda b, order, c, t: (np.zeros(len(order), bool),
                                                np.arange(len(order))))


def with_branch(monkeypatch, branch):
    for name, value in zip(("PYTHON_LIMIT", "MAX_ROUNDS", "SHRINK"), branch):
        monkeypatch.setattr(leaders, name, value)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_yolo_candidates_equal_the_references_in_every_branch(seed, branch, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    with_branch(monkeypatch, branch)
    boxes, scores, classes = yolo_candidates(seed)
    bl, sl, cl = boxes.tolist(), scores.tolist(), classes.tolist()
    for thr in (0.0, 0.3, 0.45, 0.7):
        ref = reference_nms(bl, sl, thr, cl)
        assert nms(boxes, scores, thr, classes).tolist() == ref
        assert nms(boxes, scores, thr, classes, max_keep=5).tolist() == ref[:5]
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        assert np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), sl, cl, 0.0, thr)
                          ).ravel().tolist() == ref


def test_a_crowd_takes_numpy_rounds_and_clutter_the_all_pairs_path(monkeypatch):
    handed_back = []
    real = module._kept_by_pairs
    monkeypatch.setattr(module, "_kept_by_pairs",
                        lambda b, o, c, t, m: handed_back.append(len(o)) or real(b, o, c, t, m))
    crowd = yolo_candidates(2, objects=50, classes=1)     # 50 people: a round per person
    assert nms(*crowd[:2], 0.45, crowd[2]).tolist() == reference_nms(
        crowd[0].tolist(), crowd[1].tolist(), 0.45, crowd[2].tolist())
    assert handed_back == []
    boxes, scores, classes = random_boxes(600, 9)          # uniform clutter: most boxes kept
    assert nms(boxes, scores, 0.45, classes).tolist() == reference_nms(
        boxes.tolist(), scores.tolist(), 0.45, classes.tolist())
    assert len(handed_back) == 1 and handed_back[0] > 500


def test_yolo_candidates_take_one_numpy_round_and_the_python_remainder(monkeypatch):
    rows_seen = []
    real = leaders._greedy_rows
    monkeypatch.setattr(leaders, "_greedy_rows",
                        lambda rows, thr: rows_seen.append(len(rows)) or real(rows, thr))
    boxes, scores, classes = yolo_candidates(0)
    kept = nms(boxes, scores, 0.45, classes)
    assert len(rows_seen) == 1 and 0 < rows_seen[0] <= leaders.PYTHON_LIMIT
    assert len(kept) >= 20 and kept.tolist() == reference_nms(
        boxes.tolist(), scores.tolist(), 0.45, classes.tolist())


@pytest.mark.parametrize("branch", BRANCHES)
def test_random_boxes_equal_the_greedy_loop_in_every_branch(branch, monkeypatch):
    with_branch(monkeypatch, branch)
    rng = np.random.default_rng(3)
    for seed in range(40):
        n = int(rng.integers(1, 300))
        boxes, scores, _ = random_boxes(n, seed, extent=640.0,
                                        clusters=int(rng.integers(1, 40)))
        if seed % 3 == 0:
            boxes = np.round(boxes)               # equal IoUs at the threshold, touching edges
        if seed % 4 == 0:
            scores = np.round(scores, 1)          # score ties: lower index first
        classes = rng.integers(0, [1, 3, 20, 80][seed % 4], n)
        thr = [0.0, 0.3, 0.45, 0.5, 0.7, 1.0][seed % 6]
        assert nms(boxes, scores, thr, classes).tolist() == \
            reference_nms(boxes.tolist(), scores.tolist(), thr, classes.tolist())


@pytest.mark.parametrize("branch", BRANCHES)
def test_odd_values_equal_the_all_pairs_path(branch, monkeypatch):
    # nan/inf corners, zero-area and inverted boxes, nan scores, huge class ids and
    # negative or nan thresholds: the same kept indices as the all-pairs path
    rng = np.random.default_rng(4)
    cases = []
    for seed in range(30):
        boxes, scores, _ = random_boxes(60, seed + 100, extent=100.0, clusters=6)
        boxes = np.round(boxes)
        rows = rng.integers(0, 60, 6)
        boxes[rows[0], rng.integers(4)] = np.nan
        boxes[rows[1], 2] = np.inf
        boxes[rows[2], 0] = -np.inf
        boxes[rows[3]] = boxes[rows[3], [0, 1, 0, 1]]          # zero area
        boxes[rows[4]] = boxes[rows[4], [2, 3, 0, 1]]          # inverted
        if seed % 2:
            scores[rows[5]] = np.nan
        classes = rng.integers(0, 3, 60) * (10**15 if seed % 5 == 0 else 1)
        thr = [0.0, 0.3, 0.5, 1.0, -0.1, float("nan")][seed % 6]
        cases.append((boxes, scores, thr, classes))
    with_branch(monkeypatch, branch)
    got = [nms(*case).tolist() for case in cases]
    pairs_only(monkeypatch)
    assert got == [nms(*case).tolist() for case in cases]


def test_greedy_rows_by_hand():
    # rows [x0, y0, x1, y1, area, group, rank]; threshold 0.5: IoU exactly 0.5 keeps
    rows = [[0, 0, 3, 1, 3, 0, 0], [1, 0, 4, 1, 3, 0, 1], [0, 0, 2, 1, 2, 0, 2],
            [0, 0, 3, 1, 3, 5, 3], [float("nan"), 0, 1, 1, float("nan"), 5, 4],
            [0, 0, 3, 1, 3, 5, 6]]
    assert leaders._greedy_rows(rows, 0.5) == [0, 1, 3, 4]
    assert leaders._greedy_rows(rows, 0.49) == [0, 3, 4]


def test_underflowing_intersection_divides_as_numpy():
    # two identical 1e-200 px boxes: w and h > 0, but w*h and the areas underflow to 0,
    # so the IoU is 0/0 = nan in numpy (never suppresses); the Python remainder agrees
    tiny = [0.0, 0.0, 1e-200, 1e-200]
    boxes = np.array([[20, 20, 30, 30], tiny, tiny])
    assert leaders._greedy_rows([tiny + [0.0, 0, 1], tiny + [0.0, 0, 2]], 0.5) == [1, 2]
    assert nms(boxes, [0.9, 0.8, 0.7], 0.5, [0, 0, 0]).tolist() == [0, 1, 2]
