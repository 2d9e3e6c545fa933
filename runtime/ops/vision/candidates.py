"""What detection decoders hand to `nms`: per-image candidates in model-input pixels.

A decoder (`yolo`, `ssd_anchors`, `boxes`) turns raw outputs into candidate boxes in the
pixel space of the model input (after letterbox/resize); `nms` suppresses, maps the
survivors back to the source image through the call's Geometry and builds the result
dicts. Suppressing in model space is what the reference pipelines do (Ultralytics,
MediaPipe): IoU is not invariant under a non-uniform (stretch) resize.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import PipelineError
from ...specs import TensorSpec
from .. import Context
from ..trace import Trace

#: The key under which decoders pass candidates to the next decode step.
CANDIDATES = "candidates"
#: Decode steps whose result is candidates for `nms`, never a result `predict` can return.
CANDIDATE_DECODERS = ("yolo", "ssd_anchors", "boxes")


def check_decode_ends(steps: Sequence[Any], where: str = "decode") -> None:
    """Refuse decode steps that end with a detection decoder (PipelineError naming the fix).

    A decoder yields model-space candidates (numpy arrays in a CandidateBatch) that only
    `nms` turns into the documented {"detections": [...]}; returned from `predict` they
    would not be JSON (serve, `run --json`, the MQTT bridge) nor in source pixels. Called
    when a bundle loads, so serve refuses such a version up front.
    """
    if not steps:
        return
    last = steps[-1]
    op = last.get("op") if isinstance(last, Mapping) else None
    if op in CANDIDATE_DECODERS:
        raise PipelineError(
            f"{where}[{len(steps) - 1}] ({op}) is the last decode step: it yields candidate "
            f"boxes for 'nms', not detections; add {{\"op\": \"nms\"}} after it (with "
            f"\"mode\": \"none\" when the model already suppressed its boxes)")


@dataclass(frozen=True)
class Candidates:
    """One image's candidates: boxes (N, 4) [x0, y0, x1, y1] in model-input pixels,
    scores (N,), classes (N,) int64, optional keypoints (N, K, 2) x/y in model pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    keypoints: np.ndarray | None = None

    def take(self, index: np.ndarray) -> "Candidates":
        return Candidates(self.boxes.take(index, 0), self.scores.take(index),
                          self.classes.take(index),
                          None if self.keypoints is None else self.keypoints.take(index, 0))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class CandidateBatch:
    """Candidates per image, the model-input size (h, w) and the image input they refer to.

    `batched` is False when the model's output had a batch of one: the result is then one
    list of detections, not a list of lists (CONTRACT: a single image -> one list)."""

    images: tuple[Candidates, ...]
    size: tuple[int, int]
    input: str | None
    batched: bool


def image_input(ctx: Context, p) -> TensorSpec | None:
    """The image input the boxes refer to: parameter `input`, else the only 4-D input."""
    name = p.get("input")
    if name is not None:
        for spec in ctx.inputs:
            if spec.name == name:
                return spec
        raise p.fail(f"'input' {name!r} is not one of the model's inputs "
                     f"{[s.name for s in ctx.inputs]}")
    images = [s for s in ctx.inputs if len(s.shape) == 4]
    return images[0] if len(images) == 1 else None


def spec_image_size(spec: TensorSpec | None) -> tuple[int, int] | None:
    """(h, w) of a 4-D image input from its layout (NCHW/NHWC, else guessed), if static."""
    if spec is None or len(spec.shape) != 4:
        return None
    layout = (spec.layout or "").upper()
    if layout.endswith("CHW") or (not layout and spec.shape[1] in (1, 3, 4)
                                   and spec.shape[3] not in (1, 3, 4)):
        h, w = spec.shape[2], spec.shape[3]
    else:
        h, w = spec.shape[1], spec.shape[2]
    return (h, w) if h > 0 and w > 0 else None


def model_size(spec: TensorSpec | None, trace: Trace) -> tuple[int, int]:
    """The model input's (h, w) for this call: from the Geometry preprocessing recorded,
    else from the spec, else from the tensor as fed."""
    name = spec.name if spec is not None else None
    geometry = trace.primary_geometry(name)
    if geometry is not None:
        return geometry.size
    size = spec_image_size(spec)
    if size is not None:
        return size
    if trace.feeds and name in trace.feeds:
        fed = trace.feeds[name]
        if fed.ndim == 4:
            return spec_image_size(TensorSpec(name, tuple(fed.shape), str(fed.dtype),
                                              spec.layout)) or (1, 1)
    raise ValueError("cannot tell the model input's height and width (dynamic shape and no "
                     "resize/letterbox step); give the input a static shape")


def output_name(ctx: Context, p, key: str, required: bool = True) -> str | None:
    """The output tensor named by parameter `key` (default: the only output)."""
    names = [s.name for s in ctx.outputs]
    if not p.has(key):
        if not required:
            return None
        if len(names) == 1:
            return names[0]
        raise p.fail(f"'{key}' must name one of the model's outputs {names}")
    value = p.string(key)
    if names and value not in names:
        raise p.fail(f"'{key}' {value!r} is not one of the model's outputs {names}")
    return value


def output_spec(ctx: Context, name: str | None) -> TensorSpec | None:
    return next((s for s in ctx.outputs if s.name == name), None)


def per_image(array: np.ndarray, rank: int) -> tuple[Sequence[np.ndarray], bool]:
    """Split a batched output into per-image arrays of `rank` dims; (arrays, batched)."""
    array = np.asarray(array)
    if array.ndim == rank:
        return [array], False
    if array.ndim != rank + 1:
        raise ValueError(f"expected {rank + 1} dims (batch first), got shape {array.shape}")
    if array.shape[0] == 1:
        return [array[0]], False      # (list() of an array builds an iterator: ~5x slower)
    return list(array), array.shape[0] > 1


def center_to_corners(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray
                      ) -> np.ndarray:
    """(N, 4) float64 [x0, y0, x1, y1] from centre/size columns."""
    out = np.empty((len(cx), 4), dtype=np.float64)
    hw, hh = np.multiply(w, 0.5, dtype=np.float64), np.multiply(h, 0.5, dtype=np.float64)
    np.subtract(cx, hw, out=out[:, 0])
    np.subtract(cy, hh, out=out[:, 1])
    np.add(cx, hw, out=out[:, 2])
    np.add(cy, hh, out=out[:, 3])
    return out


def label_of(labels: Sequence[str] | None, index: int) -> str:
    return labels[index] if labels and 0 <= index < len(labels) else str(index)


def logit(p: float) -> float:
    """The inverse of the sigmoid (thresholds on probabilities compared on raw logits)."""
    if p <= 0.0:
        return -np.inf
    if p >= 1.0:
        return np.inf
    return float(np.log(p / (1.0 - p)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def batch_result(images: list[Candidates], size, spec, batched: bool) -> dict[str, Any]:
    return {CANDIDATES: CandidateBatch(tuple(images), tuple(size),
                                      spec.name if spec is not None else None, batched)}
