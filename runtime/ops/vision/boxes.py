"""`boxes`: models that already output boxes, scores and classes -> candidates.

Covers TF Object Detection API TFLite models with the built-in postprocess op (boxes
[1, N, 4] as normalized y0, x0, y1, x1; classes [1, N]; scores [1, N]; count [1]) and
torchvision-style detectors (boxes [N, 4] xyxy pixels, scores [N], labels [N]), and any
per-class score matrix ([1, N, C]: each box's best class). Follow it with `nms` (mode
"none" when the model already suppressed).
"""
from __future__ import annotations

import numpy as np

from .. import Context, Params, register_decode
from .candidates import Candidates, batch_result, center_to_corners, image_input, model_size, \
    output_name

_FORMATS = ("xyxy", "yxyx", "xywh", "cxcywh")


def to_corners(raw: np.ndarray, fmt: str) -> np.ndarray:
    """(N, 4) boxes in `fmt` -> (N, 4) float64 [x0, y0, x1, y1]."""
    b = np.asarray(raw, np.float64).reshape(-1, 4)
    if fmt == "xyxy":
        return b.copy()
    if fmt == "yxyx":
        return b[:, [1, 0, 3, 2]]
    if fmt == "xywh":
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    return center_to_corners(b[:, 0], b[:, 1], b[:, 2], b[:, 3])


@register_decode("boxes")
def _boxes(p: Params, ctx: Context):
    """Params: boxes, scores (output names), classes (output name, optional), count
    (output name of the valid-detection count, optional), format "xyxy" | "yxyx" |
    "xywh" | "cxcywh" (default "xyxy"), coordinates "pixels" | "normalized" (default
    "normalized"), class_offset (added to class ids, e.g. -1 for background-first
    label maps), score_threshold (0.0), input."""
    boxes_name = output_name(ctx, p, "boxes")
    scores_name = output_name(ctx, p, "scores")
    classes_name = output_name(ctx, p, "classes", required=False)
    count_name = output_name(ctx, p, "count", required=False)
    fmt = p.choice("format", _FORMATS, "xyxy")
    coordinates = p.choice("coordinates", ("pixels", "normalized"), "normalized")
    offset = p.integer("class_offset", 0)
    threshold = p.number("score_threshold", 0.0)
    spec = image_input(ctx, p)

    def one(boxes, scores, classes, count, size) -> Candidates:
        b = to_corners(boxes, fmt)
        s = np.asarray(scores, np.float32)
        if s.ndim == 2 and s.shape[0] == len(b) and s.shape[1] > 1 and classes is None:
            cls = s.argmax(1)
            s = s[np.arange(len(b)), cls]
        else:
            s = s.reshape(-1)
            cls = np.zeros(len(s), np.int64) if classes is None else \
                np.rint(np.asarray(classes, np.float64).reshape(-1)).astype(np.int64)
        if len(s) != len(b) or len(cls) != len(b):
            raise ValueError(f"{len(b)} boxes, {len(s)} scores and {len(cls)} classes")
        n = len(b) if count is None else max(0, min(len(b), int(np.asarray(count).reshape(-1)[0])))
        keep = np.flatnonzero(s[:n] > threshold)
        b = b[keep]
        if coordinates == "normalized":
            b *= np.array([size[1], size[0], size[1], size[0]], np.float64)
        return Candidates(b, s[keep], cls[keep] + offset)

    def decode(tensors, trace):
        size = model_size(spec, trace)
        raw = np.asarray(tensors[boxes_name])
        # [B, N, 4] is batched (every other output then has the batch axis too); [N, 4] is not
        has_batch = raw.ndim == 3
        split = (lambda v: list(np.asarray(v))) if has_batch else (lambda v: [np.asarray(v)])
        boxes, batched = split(raw), has_batch and raw.shape[0] > 1
        scores = split(tensors[scores_name])
        classes = split(tensors[classes_name]) if classes_name else [None] * len(boxes)
        counts = list(np.asarray(tensors[count_name]).reshape(len(boxes), -1)) if count_name \
            else [None] * len(boxes)
        if not (len(scores) == len(classes) == len(counts) == len(boxes)):
            raise ValueError("boxes, scores, classes and count have different batch sizes")
        images = [one(b, s, c, k, size) for b, s, c, k in zip(boxes, scores, classes, counts)]
        return batch_result(images, size, spec, batched)
    return decode
