"""Non-maximum suppression (hard and weighted, class-aware or agnostic) and the `nms` step.

Semantics, matched to the references (tested against a plain greedy loop and OpenCV):
- candidates are visited in descending score order, ties in ascending index order (a
  stable sort, as OpenCV's `NMSBoxes`); torchvision's order on exact ties is unspecified;
- a kept box suppresses another when their IoU is **strictly greater** than the threshold
  (torchvision `ops.nms`, OpenCV `NMSBoxes`, MediaPipe); IoU = inter / (area_a + area_b -
  inter) in float64, with no "+1" pixel convention; a pair with zero union never suppresses;
- class-aware: only boxes of the same class suppress each other (torchvision `batched_nms`,
  OpenCV `NMSBoxesBatched`);
- weighted (MediaPipe's WEIGHTED overlap): every kept box absorbs the boxes it suppresses;
  its box (and keypoints) become their score-weighted mean, its score stays its own.

Speed: no N x N matrix. Class-aware NMS first goes by class leaders (`leaders.py`: each
class's best box is kept and drops what it suppresses, all classes in one round; the few
boxes left finish in a Python loop): ~33 numpy calls for ~200 YOLO candidates, on par with
OpenCV's NMSBoxesBatched on the same boxes; a crowd in one class takes a round per kept box.
Uniform clutter (many boxes kept per class) and agnostic NMS take the all-pairs path: every pair inside each class when classes hold few boxes, else those a
sort-and-sweep on x finds overlapping; their exact IoU is computed on flat arrays gathered
with `take`, and the greedy order resolved as a fixed point in a few vectorised rounds
(see `_resolve`), ~60 numpy calls for 200 boxes.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import Context, Params, register_decode
from .candidates import CANDIDATES, CandidateBatch, Candidates, label_of
from .leaders import class_leaders

#: Above this many candidate pairs, fall back to a loop over kept boxes (bounded memory).
PAIR_LIMIT = 4_000_000
#: Rounds of the parallel resolution before the rest is resolved one box at a time.
MAX_WAVES = 64


def iou_matrix(a: Any, b: Any) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4), xyxy, float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _pair_iou(cols: np.ndarray, area: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """IoU of the pairs (i[k], j[k]); `cols` is (4, n) x0, y0, x1, y1 rows (contiguous),
    or (5, n) with the areas as a fifth row (one gather fewer).

    Gathers whole (4, k) blocks with `take` (a fraction of the cost of fancy-indexing rows)
    and works on x and y together: ~12 numpy calls whatever k is."""
    ci, cj = cols.take(i, 1), cols.take(j, 1)
    wh = np.minimum(ci[2:4], cj[2:4])
    wh -= np.maximum(ci[:2], cj[:2])
    np.maximum(wh, 0.0, out=wh)
    inter = np.multiply(wh[0], wh[1])
    union = ci[4] + cj[4] if len(cols) > 4 else area.take(i) + area.take(j)
    union -= inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(inter, union, out=inter)  # 0/0 -> nan: never greater than a threshold


def _overlap_pairs(cols: np.ndarray, classes: np.ndarray | None):
    """(u, v) rank pairs, u < v, whose x ranges may overlap (and of the same class), or None
    if there are more than PAIR_LIMIT. A superset of the pairs with a positive intersection:
    their exact IoU is computed afterwards, so the sweep only has to miss none."""
    n = cols.shape[1]
    xs = cols[0::2]                                       # (2, n): x0, x1
    if classes is not None and n:
        # Shift each class to its own x band: pairs of different classes never meet. The
        # slack keeps in the superset a pair whose tiny overlap the shift's rounding erases.
        band = 2.0 * (float(xs[1].max()) - float(xs[0].min()) + 1.0)
        top = band * (float(np.abs(classes).max()) + 1.0)
        if not math.isfinite(top):
            return None     # nan/inf coordinates: the exact loop keeps classes apart
        xs = xs + classes * band
        xs[1] += top * 1e-12
    by_x = np.argsort(xs[0])
    sorted_xs = xs.take(by_x, 1)
    after = np.arange(1, n + 1)
    counts = np.searchsorted(sorted_xs[0], sorted_xs[1], side="left")
    counts -= after
    np.maximum(counts, 0, out=counts)
    total = int(counts.sum())
    if total > PAIR_LIMIT:
        return None
    first, second = _expand_pairs(counts, after, total)
    p, q = by_x.take(first), by_x.take(second)
    return np.minimum(p, q), np.maximum(p, q)


def _class_pairs(classes: np.ndarray):
    """(u, v) rank pairs, u < v, of the same class: every pair inside each class, or None
    when that is many more pairs than boxes (a crowded class: the x sweep is cheaper then).
    For the few-boxes-per-class candidates detectors give, this needs no x sort and no
    class shift: a stable sort by class keeps rank order inside each class."""
    n = len(classes)
    by_class = classes.argsort(kind="stable")
    grouped = classes.take(by_class)
    after = np.arange(1, n + 1)
    counts = grouped.searchsorted(grouped, "right")
    counts -= after
    total = int(np.add.reduce(counts))
    if total > min(max(1024, 8 * n), PAIR_LIMIT):
        return None
    first, second = _expand_pairs(counts, after, total)
    return by_class.take(first), by_class.take(second)   # rank order kept: first < second


def _expand_pairs(counts: np.ndarray, after: np.ndarray, total: int):
    """Row r pairs with the counts[r] rows right after it: (r, r + 1), ..., (r, r +
    counts[r]), as two flat position arrays of `total` pairs (after = arange(1, n + 1)).
    Pair k of row r is (r, r + 1 + (k - the first pair of row r))."""
    lead = counts.cumsum()
    lead -= counts
    lead -= after
    first = (after - 1).repeat(counts)
    second = lead.repeat(counts)
    np.subtract(np.arange(total), second, out=second)
    return first, second


def _resolve(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Greedy NMS on rank-ordered nodes given suppression edges u -> v (u < v): kept mask.

    The greedy result K is the one fixed point of K[j] = no kept u with an edge u -> j
    (by induction on rank). Iterating that map from "all kept" makes every box whose
    longest chain of possible suppressors is shorter than the round number exact, so it
    settles in (longest chain + 1) rounds: 2-3 for the clusters detectors produce. The
    first unchanged round is the answer; a long chain finishes one box at a time."""
    everything = np.empty(n, bool)
    everything.fill(True)
    kept = everything.copy()
    kept[v] = False                       # round 1 from "all kept": the unsuppressable ones
    for _ in range(MAX_WAVES - 1):
        new = everything.copy()
        new[v.compress(kept.take(u))] = False
        # (bytes compare: a few hundred booleans, cheaper than xor + any())
        if new.tobytes() == kept.tobytes():
            return kept
        kept = new
    # A long chain of overlaps: finish in rank order, one box at a time.
    order = np.argsort(u, kind="stable")
    u, v = u[order], v[order]
    starts = np.searchsorted(u, np.arange(n + 1))
    state = np.zeros(n, np.int8)          # 0 undecided, 1 kept, 2 suppressed
    for i in range(n):
        if state[i] == 0:
            state[i] = 1
        if state[i] == 1:
            targets = v[starts[i]:starts[i + 1]]
            state[targets[state[targets] == 0]] = 2
    return state == 1


def _greedy_loop(cols: np.ndarray, area: np.ndarray, classes: np.ndarray | None,
                 threshold: float, max_keep: int | None) -> np.ndarray:
    """The plain greedy loop (kept boxes x remaining), for very many candidate pairs."""
    n = cols.shape[1]
    alive = np.ones(n, bool)
    kept = []
    for i in range(n):
        if not alive[i]:
            continue
        kept.append(i)
        if max_keep is not None and len(kept) >= max_keep:
            break
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if classes is not None:
            rest = rest[classes[rest] == classes[i]]
        iou = _pair_iou(cols, area, np.full(len(rest), i), rest)
        alive[rest[iou > threshold]] = False
    mask = np.zeros(n, bool)
    mask[kept] = True
    return mask


def _checked(boxes: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """boxes as (n, 4) float64 and scores as (n,), or ValueError."""
    b = np.asarray(boxes, np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        b = b.reshape(-1, 4)
    s = np.asarray(scores)
    if s.ndim != 1:
        s = s.reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    return b, s


def _rank_columns(b: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The boxes visited in `order` as (5, n) rows x0, y0, x1, y1, area."""
    cols = np.empty((5, len(order)))
    b.T.take(order, 1, out=cols[:4])      # (decoders hand (4, n) corner rows, viewed as .T)
    sides = cols[2:4] - cols[:2]
    np.multiply(sides[0], sides[1], out=cols[4])
    return cols


def _edges(cols: np.ndarray, c: np.ndarray | None, threshold: float):
    """The suppression edges (u, v) in rank space, or None (too many pairs, or a negative
    threshold: every pair suppresses, the sweep's overlap superset is not enough)."""
    n = cols.shape[1]
    if threshold < 0:
        return None
    pairs = None if c is None or not n else _class_pairs(c)
    if pairs is None:
        pairs = _overlap_pairs(cols, c) if n else (np.zeros(0, np.intp),) * 2
    if pairs is None:
        return None
    u, v = pairs
    hit = _pair_iou(cols, cols[4], u, v) > threshold
    return u.compress(hit), v.compress(hit)


def _suppress(boxes: Any, scores: Any, threshold: float, classes: Any = None):
    """Sorted order, the suppression edges in rank space (or None: too many pairs) and
    (sorted boxes as (5, n) rows x0, y0, x1, y1, area; their areas; sorted classes)."""
    b, s = _checked(boxes, scores)
    order = (-s).argsort(kind="stable")
    cols = _rank_columns(b, order)
    c = None if classes is None else np.asarray(classes).reshape(-1).take(order)
    return order, _edges(cols, c, threshold), (cols, cols[4], c)


def _kept_by_pairs(b: np.ndarray, order: np.ndarray, c: np.ndarray | None, threshold: float,
                   max_keep: int | None) -> np.ndarray:
    """Kept mask over ranks by the all-pairs path (c: the classes in rank order)."""
    cols = _rank_columns(b, order)
    edges = _edges(cols, c, threshold)
    if edges is None:
        return _greedy_loop(cols, cols[4], c, threshold, max_keep)
    return _resolve(cols.shape[1], *edges)


def nms(boxes: Any, scores: Any, iou_threshold: float, classes: Any = None,
        max_keep: int | None = None) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, in descending score order.

    boxes (N, 4) xyxy; scores (N,); `classes` (N,) makes it class-aware (boxes of
    different classes never suppress each other); `max_keep` stops after that many.
    Same kept indices as torchvision's `nms`/`batched_nms` and OpenCV's `NMSBoxes`/
    `NMSBoxesBatched` (see the module docstring for ties and the threshold).
    """
    b, s = _checked(boxes, scores)
    order = (-s).argsort(kind="stable")
    if classes is None or not len(s):
        c = None if classes is None else np.asarray(classes).reshape(-1).take(order)
        kept = _kept_by_pairs(b, order, c, iou_threshold, max_keep)
    else:
        c = np.asarray(classes).reshape(-1)
        kept, rest = class_leaders(b, order, c, iou_threshold)
        if rest is not None:          # crowded classes: the rest among itself, all pairs
            sub = order.take(rest)
            kept[rest.compress(_kept_by_pairs(b, sub, c.take(sub), iou_threshold, None))] = True
    result = order.compress(kept)
    return result[:max_keep] if max_keep is not None else result


def weighted_nms(boxes: Any, scores: Any, iou_threshold: float, classes: Any = None,
                 keypoints: Any = None, max_keep: int | None = None):
    """MediaPipe-style weighted NMS: (kept indices, blended boxes, blended keypoints|None).

    Kept indices are those of hard NMS; each kept box is replaced by the score-weighted
    mean of itself and the boxes it suppressed (IoU > threshold with it, not already taken
    by a higher-scored kept box); scores are not changed.
    """
    b_in = np.asarray(boxes, np.float64).reshape(-1, 4)
    s_in = np.asarray(scores, np.float64).reshape(-1)
    order, edges, (cols, area, c) = _suppress(b_in, s_in, iou_threshold, classes)
    n = cols.shape[1]
    b = cols.T
    if edges is None:
        kept = _greedy_loop(cols, area, c, iou_threshold, None)
        keep_rank = np.flatnonzero(kept)
        # the owner of a suppressed box: the first kept box (in rank) that overlaps it
        owner = np.arange(n)
        taken = kept.copy()
        for i in keep_rank:
            rest = np.flatnonzero(~taken)
            rest = rest[rest > i]
            if c is not None:
                rest = rest[c[rest] == c[i]]
            hit = rest[_pair_iou(cols, area, np.full(len(rest), i), rest) > iou_threshold]
            owner[hit], taken[hit] = i, True
    else:
        u, v = edges
        kept = _resolve(n, u, v)
        keep_rank = np.flatnonzero(kept)
        owner = np.arange(n)
        from_kept = kept[u] & ~kept[v]
        fu, fv = u[from_kept], v[from_kept]
        first = np.lexsort((fu, fv))             # by v, then lowest-rank owner first
        fu, fv = fu[first], fv[first]
        lead = np.ones(len(fv), bool)
        lead[1:] = fv[1:] != fv[:-1]
        owner[fv[lead]] = fu[lead]
    weights = s_in[order]
    slot = np.full(n, -1)
    slot[keep_rank] = np.arange(len(keep_rank))
    group = slot[owner]
    total = np.bincount(group, weights, minlength=len(keep_rank))
    blended = np.stack([np.bincount(group, weights * b[:, k], minlength=len(keep_rank))
                        for k in range(4)], 1) / total[:, None]
    points = None
    if keypoints is not None:
        kp = np.asarray(keypoints, np.float64)[order]
        flat = kp.reshape(n, -1)
        sums = np.stack([np.bincount(group, weights * flat[:, k], minlength=len(keep_rank))
                         for k in range(flat.shape[1])], 1) if flat.shape[1] else \
            np.zeros((len(keep_rank), 0))
        points = (sums / total[:, None]).reshape(len(keep_rank), *kp.shape[1:])
    index = order[keep_rank]
    if max_keep is not None:
        index, blended = index[:max_keep], blended[:max_keep]
        points = None if points is None else points[:max_keep]
    return index, blended, points


# -- the decode step ------------------------------------------------------------------------
def _class_list(p: Params, key: str, labels: Sequence[str] | None) -> frozenset[int] | None:
    if not p.has(key):
        return None
    values = p.get(key)
    if not isinstance(values, list) or not values:
        raise p.fail(f"'{key}' must be a non-empty list of class indices or label names")
    out = set()
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out.add(value)
        elif isinstance(value, str) and labels and value in labels:
            out.add(list(labels).index(value))
        else:
            known = f"; labels: {list(labels)[:10]}" if labels else " (the bundle has no labels)"
            raise p.fail(f"'{key}': {value!r} is neither a class index nor a label{known}")
    return frozenset(out)


@register_decode("nms")
def _nms_step(p: Params, ctx: Context):
    """Suppress candidates from a detection decoder and return {"detections": [...]}.

    iou (0.45): IoU threshold (IoU > iou suppresses). mode: "hard" (default), "weighted"
    (MediaPipe blending) or "none" (the model already suppressed). agnostic (false): let
    boxes of different classes suppress each other. score_threshold: drop candidates at or
    below it (the decoders already applied their own). max_detections (100), max_candidates
    (30000: only the best-scored candidates enter NMS, as Ultralytics' max_nms). classes /
    exclude: allow / deny lists of class indices or labels, applied before suppression.
    Boxes and keypoints come back in source-image pixels, clipped to the image.
    """
    iou = p.number("iou", 0.45)
    if not 0.0 <= iou <= 1.0:
        raise p.fail(f"'iou' must be in [0, 1], got {iou}")
    mode = p.choice("mode", ("hard", "weighted", "none"), "hard")
    agnostic = p.get("agnostic", False)
    if not isinstance(agnostic, bool):
        raise p.fail("'agnostic' must be true or false")
    threshold = p.number("score_threshold", -np.inf) if p.has("score_threshold") else None
    max_det = p.integer("max_detections", 100, minimum=1)
    max_candidates = p.integer("max_candidates", 30000, minimum=1)
    labels = list(ctx.labels) if ctx.labels else None
    allow, deny = _class_list(p, "classes", labels), _class_list(p, "exclude", labels)

    filtered = threshold is not None or allow is not None or deny is not None
    names = [label_of(labels, i) for i in range(len(labels))] if labels else []

    def select(c: Candidates) -> Candidates:
        if not filtered:
            return c if len(c.scores) <= max_candidates else \
                c.take(np.argsort(-c.scores, kind="stable")[:max_candidates])
        keep = None
        if threshold is not None:
            keep = c.scores > threshold
        if allow is not None:
            mask = np.isin(c.classes, list(allow))
            keep = mask if keep is None else keep & mask
        if deny is not None:
            mask = ~np.isin(c.classes, list(deny))
            keep = mask if keep is None else keep & mask
        if keep is not None:
            c = c.take(np.flatnonzero(keep))
        if len(c) > max_candidates:
            c = c.take(np.argsort(-c.scores, kind="stable")[:max_candidates])
        return c

    def suppress(c: Candidates):
        classes = None if agnostic else c.classes
        if mode == "none":
            index = np.argsort(-c.scores, kind="stable")[:max_det]
            return index, c.boxes.take(index, 0), _rows(c.keypoints, index)
        if mode == "weighted":
            return weighted_nms(c.boxes, c.scores, iou, classes, c.keypoints, max_det)
        index = nms(c.boxes, c.scores, iou, classes, max_det)
        return index, c.boxes.take(index, 0), _rows(c.keypoints, index)

    def decode(tensors, trace):
        batch = tensors.get(CANDIDATES)
        if not isinstance(batch, CandidateBatch):
            raise ValueError("nms needs a detection decoder before it (yolo, ssd_anchors or "
                             "boxes) in the bundle's decode steps")
        geometry = trace.primary_geometry(batch.input)
        results = []
        for c in batch.images:
            c = select(c)
            index, boxes, points = suppress(c)
            if geometry is not None:
                boxes = geometry.boxes_to_source(boxes)
                points = None if points is None else geometry.points_to_source(points)
            else:
                h, w = batch.size
                boxes = np.clip(boxes, 0.0, [w, h, w, h])
                points = None if points is None else np.clip(points, 0.0, [w, h])
            results.append(_detections(boxes, c.scores.take(index), c.classes.take(index),
                                       points, names))
        return {"detections": results if batch.batched else results[0]}
    return decode


def _rows(array: np.ndarray | None, index: np.ndarray) -> np.ndarray | None:
    # take(): fancy-indexing rows of a (k, 4) or (k, K, 2) array is several times slower
    return None if array is None else array.take(index, 0)


def _detections(boxes, scores, classes, points, names: list[str]) -> list[dict[str, Any]]:
    """The result dicts; `names[i]` is label_of(labels, i) for every label index (a list
    lookup per detection instead of a call)."""
    box_rows, score_list, class_list = boxes.tolist(), scores.tolist(), classes.tolist()
    count = len(names)
    if points is None:
        return [{"box": box, "score": score, "class": cls,
                 "label": names[cls] if 0 <= cls < count else str(cls)}
                for box, score, cls in zip(box_rows, score_list, class_list)]
    return [{"box": box, "score": score, "class": cls,
             "label": names[cls] if 0 <= cls < count else str(cls), "keypoints": point}
            for box, score, cls, point in zip(box_rows, score_list, class_list, points.tolist())]
