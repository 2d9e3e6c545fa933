"""`yolo`: YOLOv5-style ([1, N, 5+C], objectness x class) and YOLOv8/v11-style
([1, 4+C, N], anchor-free, no objectness) outputs -> candidates.

Reproduces Ultralytics' `non_max_suppression` candidate selection: boxes are (cx, cy, w,
h) in model-input pixels (or normalized with `coordinates: "normalized"`); v5 keeps
rows whose objectness > threshold, then scores = objectness * class score; a box's
candidate is its best class when that score > threshold (strictly), or, with
`multi_label`, every class above it. v8-pose style keypoints (x, y[, visibility]) may
follow the class scores.
"""
from __future__ import annotations

import numpy as np

from .. import Context, Params, register_decode
from .candidates import (Candidates, batch_result, image_input, logit, model_size, output_name,
                         output_spec, per_image, sigmoid)


def columns(view: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """view[:, idx] for a 2-D view of the engine's output, without copying the view first
    (np.take copies a non-contiguous input whole: 1.8 ms for the class block of a
    [1, 8400, 84] output, against microseconds for the gathered columns)."""
    return view.take(idx, 1) if view.flags.c_contiguous else view[:, idx]


def _best_class_above(scores: np.ndarray, cut: float):
    """(box indices, best class, its score) of the boxes whose best class score is > cut.

    `scores` is the (C, N) class block, a view of the engine's output. One pass over the
    C x N values chooses the few candidates before anything is copied, in the order the
    memory holds them: with N contiguous ([1, 4+C, N] exports) the class-max is C
    vectorised row maxima; with the classes contiguous ([1, N, 4+C] underneath a
    transposed view) a reduction over rows of C is slow in numpy, so the values are
    compared with the cut in memory order and the boxes with any hit found from the
    flat positions. Only the candidates' columns are then gathered for argmax.
    """
    count, n = scores.shape
    if count == 1:
        conf = scores[0]
        idx = np.flatnonzero(conf > cut)
        return idx, np.zeros(len(idx), np.int64), conf.take(idx)
    if scores.strides[0] != scores.itemsize:      # not classes-contiguous: row maxima
        # ufuncs called directly: max() and flatnonzero() are Python wrappers, and after
        # this pass over the whole output every further call runs on evicted caches
        best = np.maximum.reduce(scores, axis=0)
        idx = np.greater(best, cut).nonzero()[0]
        # fancy indexing leaves the (C, k) gather class-contiguous: argmax(0) needs no copy
        return idx, scores[:, idx].argmax(0), best.take(idx)
    hits = np.flatnonzero(scores.T > cut) // count       # box of each hit, ascending
    if len(hits) > 1:
        first = np.empty(len(hits), bool)
        first[0] = True
        np.not_equal(hits[1:], hits[:-1], out=first[1:])
        hits = hits.compress(first)
    sub = columns(scores, hits)                              # (C, k)
    cls = sub.argmax(0)
    conf = sub.max(0)
    keep = conf > cut         # a nan beside a hit: max() is nan there, as on the other path
    if not keep.all():
        hits, cls, conf = hits.compress(keep), cls.compress(keep), conf.compress(keep)
    return hits, cls, conf


@register_decode("yolo")
def _yolo(p: Params, ctx: Context):
    """Params: output (name; default the only output), version "v8" (default) | "v5",
    classes (count; default: the labels, else what the tensor leaves), layout "auto" |
    "attributes_first" ([4+C, N]) | "attributes_last" ([N, 4+C]), coordinates "pixels" |
    "normalized", activation "none" | "sigmoid" (raw logits), score_threshold (0.25),
    multi_label (false), keypoints (0), keypoint_values (3), input."""
    name = output_name(ctx, p, "output")
    version = p.choice("version", ("v8", "v5"), "v8")
    layout = p.choice("layout", ("auto", "attributes_first", "attributes_last"), "auto")
    coordinates = p.choice("coordinates", ("pixels", "normalized"), "pixels")
    activation = p.choice("activation", ("none", "sigmoid"), "none")
    threshold = p.number("score_threshold", 0.25)
    multi_label = p.get("multi_label", False)
    if not isinstance(multi_label, bool):
        raise p.fail("'multi_label' must be true or false")
    keypoints = p.integer("keypoints", 0, minimum=0)
    kp_values = p.integer("keypoint_values", 3, minimum=2)
    classes = p.integer("classes", len(ctx.labels), minimum=1) if p.has("classes") or \
        ctx.labels else None
    spec = image_input(ctx, p)
    head = 4 + (1 if version == "v5" else 0)
    extra = keypoints * kp_values
    out_spec = output_spec(ctx, name)
    if out_spec is not None and len(out_spec.shape) == 3 and classes is not None:
        attrs = head + classes + extra
        if attrs not in out_spec.shape[1:] and -1 not in out_spec.shape[1:]:
            raise p.fail(f"output {name!r} has shape {list(out_spec.shape)}; a {version} head "
                         f"with {classes} classes and {keypoints} keypoints needs {attrs} "
                         "values per box")
    cut = logit(threshold) if activation == "sigmoid" else threshold

    def attributes_first(x: np.ndarray) -> np.ndarray:
        if layout != "auto":
            return x if layout == "attributes_first" else x.T
        if classes is not None:
            attrs = head + classes + extra
            if x.shape[0] == attrs:
                return x
            if x.shape[1] == attrs:
                return x.T
        return x if x.shape[0] <= x.shape[1] else x.T   # N (boxes) is the longer axis

    def one(x: np.ndarray, size) -> Candidates:
        a = attributes_first(np.asarray(x))      # (attributes, N), maybe a transposed view
        count = classes if classes is not None else a.shape[0] - head - extra
        if count < 1 or head + count + extra > a.shape[0]:
            raise ValueError(f"{a.shape[0]} values per box cannot hold a {version} head with "
                             f"{count} classes and {keypoints} keypoints")
        scores = a[head:head + count]
        if version == "v8":
            if multi_label:
                cls, idx = np.nonzero(scores > cut)
                conf = scores[cls, idx]
            else:
                idx, cls, conf = _best_class_above(scores, cut)
            if activation == "sigmoid":
                conf = sigmoid(conf)
        else:
            obj = a[4]
            idx = np.flatnonzero(obj > cut)
            o = obj.take(idx)
            sub = columns(scores, idx)
            if activation == "sigmoid":
                o, sub = sigmoid(o), sigmoid(sub)
            sub = sub * o[None, :]
            if multi_label:
                cls, col = np.nonzero(sub > threshold)
                conf, idx = sub[cls, col], idx[col]
            else:
                cls = sub.argmax(0) if len(idx) else np.zeros(0, np.int64)
                conf = sub[cls, np.arange(len(idx))]
                keep = conf > threshold
                cls, conf, idx = cls[keep], conf[keep], idx[keep]
        # Only the k selected columns are gathered and widened: float64 boxes for k rows
        # (exact IoU in NMS), never for the whole [4+C, N] tensor.
        box = columns(a[0:4], idx).astype(np.float64)          # (4, k) cx, cy, w, h
        if coordinates == "normalized":
            box *= np.array([size[1], size[0], size[1], size[0]], np.float64)[:, None]
        half = box[2:] * 0.5
        boxes = np.concatenate((box[:2] - half, box[:2] + half)).T   # (k, 4) x0, y0, x1, y1
        points = None
        if keypoints:
            start = head + count
            raw = columns(a[start:start + extra], idx).astype(np.float64)   # (K*v, k)
            points = raw.T.reshape(len(idx), keypoints, kp_values)[:, :, :2].copy()
            if coordinates == "normalized":
                points *= np.array([size[1], size[0]], np.float64)
        return Candidates(boxes, np.asarray(conf, np.float32), np.asarray(cls, np.int64), points)

    def decode(tensors, trace):
        size = model_size(spec, trace)
        arrays, batched = per_image(tensors[name], 2)
        return batch_result([one(x, size) for x in arrays], size, spec, batched)
    return decode
