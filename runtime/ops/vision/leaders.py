"""Class-aware greedy NMS by class leaders: the fast path of `nms` for detector candidates.

Greedy NMS visits boxes by descending score. Inside one class, the best-scored box (the
class *leader*) is always kept, and every box it suppresses is suppressed in the greedy
result too (a kept, higher-ranked box of the same class overlaps it). What is left of the
class -- neither the leader nor suppressed by it -- is decided by the kept boxes among
itself alone: the leader suppresses none of it, and suppressed boxes suppress nothing. So
greedy NMS is rounds of "keep each class's best remaining box, drop what it suppresses",
all classes at once, one IoU per remaining box per round. Detector candidates (a few
boxes per object, a few objects per class) need one round and leave a handful of boxes,
finished by a plain loop over Python floats, cheaper than another round of numpy calls.
About 35 numpy calls for YOLO's ~200 candidates instead of ~60 for the all-pairs path.

Exactness: the IoU is the same float64 formula as the pair path's (`nms._pair_iou`), and
the Python loop is the same IEEE arithmetic; it only runs with a threshold >= 0 (a pair
that does not intersect then never suppresses). A nan coordinate makes the area, so the
IoU, nan on both paths: such a box neither suppresses nor is suppressed.

Crowded classes need a round per kept box, each removing that box's cluster: cheaper
than all pairs while the rounds remove a fair share of what is left (a crowd of people);
when they stop doing so (uniform clutter: many boxes kept per class), `class_leaders`
hands the rest back to the caller's all-pairs path.
"""
from __future__ import annotations

import math

import numpy as np

#: A remainder of at most this many boxes is finished in Python (worst case: every pair).
PYTHON_LIMIT = 32
#: Rounds of numpy before the remainder goes back to the all-pairs path.
MAX_ROUNDS = 256
#: A round must remove at least this fraction of its boxes (about 1 / SHRINK rounds to go
#: at that pace, each ~20 numpy calls), else the rest goes to the all-pairs path: many
#: kept boxes per class (uniform clutter), where rounds would take one box per class each.
SHRINK = 1 / 64

# Rows of the working array: corners (0-3), area, group (position of the class's first box in
# the (class, rank) order; small and exact in float64 whatever the class ids), rank.
_AREA, _GROUP, _RANK = 4, 5, 6


def class_leaders(boxes: np.ndarray, order: np.ndarray, classes: np.ndarray,
                  threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Greedy class-aware NMS of `boxes` (n, 4) float64 visited in `order` (ranks).

    Returns (kept, rest): `kept` is a bool mask over ranks of the boxes known kept;
    `rest` is None when that is the whole answer, else the ascending ranks still
    undecided (clutter: rounds stopped paying), to be resolved among themselves by the
    caller and added to `kept`. n must be >= 1.
    """
    n = len(order)
    by_rank = classes.take(order)
    by_class = by_rank.argsort(kind="stable")              # ranks, grouped by class
    work = np.empty((7, n))
    boxes.T.take(order.take(by_class), 1, out=work[:4])
    sides = np.subtract(work[2:4], work[:2], out=work[5:7])     # (rows 5, 6 reused below)
    np.multiply(sides[0], sides[1], out=work[_AREA])
    grouped = by_rank.take(by_class)
    start = grouped.searchsorted(grouped, "left")          # each box's class leader
    work[_GROUP] = start
    work[_RANK] = by_class
    kept = np.zeros(n, bool)
    for _ in range(MAX_ROUNDS):
        count = work.shape[1]
        lead = work.take(start, 1)
        with np.errstate(divide="ignore", invalid="ignore"):   # inf/nan boxes: nan IoU
            wh = np.minimum(work[2:4], lead[2:4])
            wh -= np.maximum(work[:2], lead[:2])
            np.maximum(wh, 0.0, out=wh)
            inter = np.multiply(wh[0], wh[1])
            union = np.add(work[_AREA], lead[_AREA])
            union -= inter
            iou = np.divide(inter, union, out=inter)   # 0/0 -> nan: never greater
        gone = np.greater(iou, threshold)
        gone[start] = True                              # the leaders: kept, not left
        kept[lead[_RANK].astype(np.intp)] = True
        work = work.compress(np.logical_not(gone, out=gone), 1)
        left = work.shape[1]
        if not left:
            return kept, None
        if left <= PYTHON_LIMIT and threshold >= 0:
            kept[_greedy_rows(work.T.tolist(), threshold)] = True
            return kept, None
        if count - left < count * SHRINK:
            break
        column = work[_GROUP]
        start = column.searchsorted(column, "left")
    return kept, np.sort(work[_RANK]).astype(np.intp)


def _greedy_rows(rows: list[list[float]], threshold: float) -> list[int]:
    """Ranks greedy NMS keeps among `rows` ([x0, y0, x1, y1, area, group, rank] in
    (group, rank) order), comparing each box with the kept boxes of its group.

    The IoU in the pair path's order of operations; min/max as comparisons, exact but
    for nan, where the area (hence the union and the IoU) is nan anyway, as in numpy;
    a zero union (underflow) divides as numpy does. Threshold >= 0: a pair that does not
    intersect is skipped."""
    kept: list[int] = []
    group, mine = None, []
    for x0, y0, x1, y1, area, g, rank in rows:
        if g != group:
            group, mine = g, []
        for kx0, ky0, kx1, ky1, karea in mine:
            w = (x1 if x1 < kx1 else kx1) - (x0 if x0 > kx0 else kx0)
            if w > 0.0:
                h = (y1 if y1 < ky1 else ky1) - (y0 if y0 > ky0 else ky0)
                if h > 0.0:
                    inter = w * h
                    union = karea + area - inter
                    try:
                        iou = inter / union
                    except ZeroDivisionError:    # as numpy: 0/0 nan, else +-inf
                        iou = math.copysign(math.inf, union) if inter else math.nan
                    if iou > threshold:
                        break
        else:
            mine.append((x0, y0, x1, y1, area))
            kept.append(int(rank))
    return kept
