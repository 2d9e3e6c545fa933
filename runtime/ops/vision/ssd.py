"""`ssd_anchors`: box/keypoint regressions against SSD anchors, as MediaPipe decodes them.

Reproduces TensorsToDetectionsCalculator's DecodeBoxes and score handling: per anchor,
centre = raw / scale * anchor_size + anchor_centre, size = raw / scale * anchor_size (or
exp(raw / scale) * anchor_size with `exponential`), keypoints like centres; the score is
the best class's sigmoid(clip(raw, +-score_clip)), kept when >= score_threshold (MediaPipe
drops scores below min_score_thresh). Coordinates are normalized to the model input and
become model pixels here; `nms` maps them to the source image.
"""
from __future__ import annotations

import numpy as np

from .. import Context, Params, register_decode
from .anchors import AnchorOptions, anchors_from_npy, generate_anchors
from .candidates import (Candidates, batch_result, center_to_corners, image_input,
                         model_size, output_name, output_spec, per_image, sigmoid)


def _anchor_options(p: Params, value: dict) -> AnchorOptions:
    q = Params({"op": "anchors", **value}, p.where + ".anchors")
    size = q.size("input_size")
    strides = q.get("strides")
    if not isinstance(strides, list) or not strides or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in strides):
        raise q.fail("'strides' must be a non-empty list of positive integers")
    offset = q.numbers("offset", [0.5, 0.5])
    if offset.size != 2:
        raise q.fail("'offset' must be [x, y]")
    maps = q.get("feature_map_sizes")
    if maps is not None and (not isinstance(maps, list) or len(maps) != len(strides) or not all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(v, int) and v > 0 for v in m)
            for m in maps)):
        raise q.fail("'feature_map_sizes' must give one [h, w] of positive integers per stride")
    flags = {}
    for key, default in (("fixed_anchor_size", True), ("reduce_boxes_in_lowest_layer", False)):
        flags[key] = q.get(key, default)
        if not isinstance(flags[key], bool):
            raise q.fail(f"'{key}' must be true or false")
    options = AnchorOptions(
        input_size=size, strides=tuple(strides),
        min_scale=q.number("min_scale", 0.1484375), max_scale=q.number("max_scale", 0.75),
        aspect_ratios=tuple(float(v) for v in q.numbers("aspect_ratios", [1.0])),
        offset=(float(offset[0]), float(offset[1])),
        interpolated_scale_aspect_ratio=q.number("interpolated_scale_aspect_ratio", 1.0),
        feature_map_sizes=tuple(tuple(m) for m in maps) if maps else None, **flags)
    q.finish()
    return options


@register_decode("ssd_anchors")
def _ssd(p: Params, ctx: Context):
    """Params: boxes / scores (output names), anchors (an asset name holding an (N, 4) .npy,
    or the anchor-generation parameters as an object), scale [x, y, w, h] (default the
    input size), order "xywh" (MediaPipe reverse_output_order) or "yxhw", box_offset (0),
    keypoints (0), keypoint_offset (4), keypoint_values (2), exponential (false),
    activation "sigmoid" | "none", score_clip (100), score_threshold (0.5), input."""
    boxes_name = output_name(ctx, p, "boxes")
    scores_name = output_name(ctx, p, "scores")
    source = p.get("anchors")
    if isinstance(source, str):
        try:
            anchors = anchors_from_npy(ctx.asset(source, p.where))
        except ValueError as e:
            raise p.fail(str(e)) from None
    elif isinstance(source, dict):
        try:
            anchors = generate_anchors(_anchor_options(p, source))
        except ValueError as e:
            raise p.fail(f"anchors: {e}") from None
    else:
        raise p.fail("'anchors' must name an asset (.npy, (N, 4)) or give the anchor "
                     "parameters (input_size, strides, ...)")
    spec = image_input(ctx, p)
    scale = p.numbers("scale") if p.has("scale") else None
    if scale is not None and scale.size != 4:
        raise p.fail("'scale' must be [x_scale, y_scale, w_scale, h_scale]")
    order = p.choice("order", ("xywh", "yxhw"), "xywh")
    box_offset = p.integer("box_offset", 0, minimum=0)
    keypoints = p.integer("keypoints", 0, minimum=0)
    kp_offset = p.integer("keypoint_offset", 4, minimum=0)
    kp_values = p.integer("keypoint_values", 2, minimum=2)
    exponential = p.get("exponential", False)
    if not isinstance(exponential, bool):
        raise p.fail("'exponential' must be true or false")
    activation = p.choice("activation", ("sigmoid", "none"), "sigmoid")
    clip = p.number("score_clip", 100.0)
    threshold = p.number("score_threshold", 0.5)
    boxes_spec = output_spec(ctx, boxes_name)
    if boxes_spec is not None and len(boxes_spec.shape) >= 2 and boxes_spec.shape[-2] > 0 \
            and boxes_spec.shape[-2] != len(anchors):
        raise p.fail(f"{len(anchors)} anchors but output {boxes_name!r} has "
                     f"{boxes_spec.shape[-2]} boxes; check the anchor parameters")
    ax, ay, aw, ah = (anchors[:, k].astype(np.float64) for k in range(4))
    xi, yi, wi, hi = (0, 1, 2, 3) if order == "xywh" else (1, 0, 3, 2)

    def one(raw_boxes, raw_scores, size):
        sx, sy, sw, sh = scale if scale is not None else (size[1], size[0], size[1], size[0])
        if raw_boxes.shape[0] != len(anchors):
            raise ValueError(f"{raw_boxes.shape[0]} boxes for {len(anchors)} anchors")
        raw_scores = raw_scores.reshape(len(anchors), -1)
        best = raw_scores.argmax(1) if raw_scores.shape[1] > 1 else np.zeros(len(anchors), np.int64)
        score = raw_scores[np.arange(len(anchors)), best]
        if activation == "sigmoid":
            score = sigmoid(np.clip(score, -clip, clip))
        keep = np.flatnonzero(score >= threshold)
        r = raw_boxes[keep].astype(np.float64)
        cx = r[:, box_offset + xi] / sx * aw[keep] + ax[keep]
        cy = r[:, box_offset + yi] / sy * ah[keep] + ay[keep]
        if exponential:
            w = np.exp(r[:, box_offset + wi] / sw) * aw[keep]
            h = np.exp(r[:, box_offset + hi] / sh) * ah[keep]
        else:
            w = r[:, box_offset + wi] / sw * aw[keep]
            h = r[:, box_offset + hi] / sh * ah[keep]
        boxes = center_to_corners(cx * size[1], cy * size[0], w * size[1], h * size[0])
        points = None
        if keypoints:
            cols = kp_offset + np.arange(keypoints)[:, None] * kp_values + \
                np.array([xi, yi] if order == "xywh" else [1, 0])[None, :]
            raw = r[:, cols]                                   # (k, K, 2) as x, y
            points = np.empty_like(raw)
            points[..., 0] = (raw[..., 0] / sx * aw[keep, None] + ax[keep, None]) * size[1]
            points[..., 1] = (raw[..., 1] / sy * ah[keep, None] + ay[keep, None]) * size[0]
        return Candidates(boxes, score[keep], best[keep].astype(np.int64), points)

    def decode(tensors, trace):
        size = model_size(spec, trace)
        raw_boxes, batched = per_image(tensors[boxes_name], 2)
        raw_scores, _ = per_image(tensors[scores_name], 2) if np.ndim(tensors[scores_name]) == 3 \
            else ([np.asarray(tensors[scores_name]).reshape(len(anchors), -1)], False)
        images = [one(b, s, size) for b, s in zip(raw_boxes, raw_scores)]
        return batch_result(images, size, spec, batched)
    return decode
