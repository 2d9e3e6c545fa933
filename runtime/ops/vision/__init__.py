"""Vision decode steps (DESIGN §7): detection decoders and non-maximum suppression.

A detection bundle's `decode` is a decoder followed by `nms`, e.g.

    [{"op": "yolo", "version": "v8", "score_threshold": 0.25},
     {"op": "nms", "iou": 0.45, "max_detections": 100}]

The decoders (`yolo`, `ssd_anchors`, `boxes`) turn the raw outputs into candidates in
model-input pixels; `nms` suppresses them and returns {"detections": [{"box", "score",
"class", "label", "keypoints"?}]} in source-image pixels (through the Geometry the
resize/letterbox/crop steps recorded), clipped to the image. Pure numpy.
"""
from __future__ import annotations

from . import boxes, nms, ssd, yolo  # noqa: F401  (registers the decode steps)
from .anchors import AnchorOptions, generate_anchors
from .candidates import CandidateBatch, Candidates
from .nms import iou_matrix, nms as nms_indices, weighted_nms

__all__ = ["AnchorOptions", "CandidateBatch", "Candidates", "generate_anchors", "iou_matrix",
           "nms_indices", "weighted_nms"]
