"""SSD anchors from the parameters of MediaPipe's SsdAnchorsCalculator.

Reproduces `mediapipe/calculators/tflite/ssd_anchors_calculator.cc` (options
`SsdAnchorsCalculatorOptions`): layers that share a stride are merged into one feature
map whose locations carry all their anchors; each location yields, in order, one anchor
per aspect ratio of every merged layer (plus the interpolated-scale anchor), row by row
(y outer, x inner). Anchors are (x_center, y_center, w, h), normalized to the input.
The short-range face detector (128x128, strides [8, 16, 16, 16], one aspect ratio plus the
interpolated one) gives 16*16*2 + 8*8*6 = 896 anchors.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnchorOptions:
    """MediaPipe's SsdAnchorsCalculatorOptions (names shortened, defaults the same)."""

    input_size: tuple[int, int]                      # (height, width)
    strides: tuple[int, ...]
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    aspect_ratios: tuple[float, ...] = (1.0,)
    offset: tuple[float, float] = (0.5, 0.5)         # (x, y) anchor_offset_x / _y
    fixed_anchor_size: bool = True
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = False
    feature_map_sizes: tuple[tuple[int, int], ...] | None = None   # per layer (h, w)

    def __post_init__(self) -> None:
        if not self.strides or any(s <= 0 for s in self.strides):
            raise ValueError("strides must be a non-empty list of positive integers")
        if self.feature_map_sizes is not None and len(self.feature_map_sizes) != len(self.strides):
            raise ValueError("feature_map_sizes needs one [h, w] per stride")


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def generate_anchors(o: AnchorOptions) -> np.ndarray:
    """(N, 4) float32 anchors [x_center, y_center, w, h], normalized."""
    layers = len(o.strides)
    blocks = []
    layer = 0
    while layer < layers:
        heights, widths = [], []
        last = layer
        while last < layers and o.strides[last] == o.strides[layer]:
            scale = _scale(o.min_scale, o.max_scale, last, layers)
            if last == 0 and o.reduce_boxes_in_lowest_layer:
                ratios, scales = [1.0, 2.0, 0.5], [0.1, scale, scale]
            else:
                ratios, scales = list(o.aspect_ratios), [scale] * len(o.aspect_ratios)
                if o.interpolated_scale_aspect_ratio > 0.0:
                    following = 1.0 if last == layers - 1 else \
                        _scale(o.min_scale, o.max_scale, last + 1, layers)
                    scales.append(math.sqrt(scale * following))
                    ratios.append(o.interpolated_scale_aspect_ratio)
            for ratio, s in zip(ratios, scales):
                root = math.sqrt(ratio)
                heights.append(s / root)
                widths.append(s * root)
            last += 1
        if o.feature_map_sizes is not None:
            fh, fw = o.feature_map_sizes[layer]
        else:
            fh = math.ceil(o.input_size[0] / o.strides[layer])
            fw = math.ceil(o.input_size[1] / o.strides[layer])
        per = len(heights)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = np.repeat(((xs.reshape(-1) + o.offset[0]) / fw), per)
        cy = np.repeat(((ys.reshape(-1) + o.offset[1]) / fh), per)
        if o.fixed_anchor_size:
            w = np.ones_like(cx)
            h = np.ones_like(cy)
        else:
            w = np.tile(np.asarray(widths), fh * fw)
            h = np.tile(np.asarray(heights), fh * fw)
        blocks.append(np.stack([cx, cy, w, h], 1))
        layer = last
    return np.concatenate(blocks).astype(np.float32)


def anchors_from_npy(data: bytes) -> np.ndarray:
    """Anchors stored as an .npy asset: (N, 4) [x_center, y_center, w, h], normalized."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise ValueError(f"the anchors asset is not a readable .npy array ({e})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise ValueError("the anchors asset must hold a numeric (N, 4) array")
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"an anchors asset must be an (N, 4) array [x_center, y_center, w, h], "
                         f"got shape {array.shape}")
    return array.astype(np.float32)


def anchors_to_npy(anchors: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(anchors, np.float32), allow_pickle=False)
    return buffer.getvalue()
