"""What one `predict` call records as it goes: geometry per image input, the feeds, notes.

Preprocessing is a chain of array -> array steps, but a detector's boxes only mean something
in the photo the user passed in. So every geometric step (resize in any aspect mode, crop,
letterbox, pad) records the axis-aligned transform it applied in the call's `Trace`, and the
decoders map model-input coordinates back through it (DESIGN §7, "Geometry").

Coordinates are continuous pixel coordinates: x in [0, width], y in [0, height], the
top-left corner of the top-left pixel at (0, 0). A box [x0, y0, x1, y1] drawn on the source
image covers the same content in the model input after `Geometry.to_model`, and back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """The map from source-image pixels to the current image: cur = src * scale + offset.

    `source_size` and `size` are (height, width). Each geometric step returns a new
    Geometry with its own transform composed on top (`resized`, `cropped`, `padded`).
    """

    source_size: tuple[int, int]
    size: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)     # (y, x)
    offset: tuple[float, float] = (0.0, 0.0)    # (y, x)

    @classmethod
    def of(cls, image_shape: tuple[int, ...]) -> "Geometry":
        """The identity geometry of an (H, W) or (H, W, C) image."""
        h, w = int(image_shape[0]), int(image_shape[1])
        return cls((h, w), (h, w))

    def resized(self, height: int, width: int) -> "Geometry":
        """After scaling the current image to (height, width) (any aspect)."""
        ry, rx = height / self.size[0], width / self.size[1]
        return Geometry(self.source_size, (height, width),
                        (self.scale[0] * ry, self.scale[1] * rx),
                        (self.offset[0] * ry, self.offset[1] * rx))

    def cropped(self, top: int, left: int, height: int, width: int) -> "Geometry":
        """After keeping rows [top, top+height) and columns [left, left+width)."""
        return Geometry(self.source_size, (height, width), self.scale,
                        (self.offset[0] - top, self.offset[1] - left))

    def padded(self, top: int, left: int, height: int, width: int) -> "Geometry":
        """After placing the current image at (top, left) of a (height, width) canvas."""
        return Geometry(self.source_size, (height, width), self.scale,
                        (self.offset[0] + top, self.offset[1] + left))

    # -- mapping ---------------------------------------------------------------------------
    def points_to_source(self, points: Any, clip: bool = True) -> np.ndarray:
        """(..., 2) x/y points in current-image pixels -> source pixels (clipped)."""
        p = np.asarray(points, dtype=np.float64)
        (sy, sx), (oy, ox), (h, w) = self.scale, self.offset, self.source_size
        k = np.array([[ox, oy], [sx, sy], [w, h]], np.float64)   # per x/y: offset, scale, size
        # Four ufunc calls on the whole array: this runs per detection result, after the
        # decoder's pass over the output has evicted the caches, where each numpy call
        # counts (np.clip's Python wrappers cost more than its arithmetic). A zero on the
        # image edge comes out +0.0 (never -0.0 in the JSON).
        out = np.subtract(p, k[0])
        out /= k[1]
        if clip:
            np.maximum(out, 0.0, out=out)
            np.minimum(out, k[2], out=out)
        return out

    def boxes_to_source(self, boxes: Any, clip: bool = True) -> np.ndarray:
        """(..., 4) [x0, y0, x1, y1] boxes in current-image pixels -> source pixels."""
        b = np.asarray(boxes, dtype=np.float64)
        corners = self.points_to_source(b.reshape(*b.shape[:-1], 2, 2), clip)
        return corners.reshape(b.shape)

    def boxes_to_model(self, boxes: Any) -> np.ndarray:
        """(..., 4) boxes in source pixels -> current-image pixels (the inverse map)."""
        b = np.asarray(boxes, dtype=np.float64).copy()
        b[..., 0::2] = b[..., 0::2] * self.scale[1] + self.offset[1]
        b[..., 1::2] = b[..., 1::2] * self.scale[0] + self.offset[0]
        return b

    def to_dict(self) -> dict[str, Any]:
        return {"source_size": list(self.source_size), "size": list(self.size),
                "scale": list(self.scale), "offset": list(self.offset)}


@dataclass
class Trace:
    """Per-call record shared by the encode, preprocess, postprocess and decode steps.

    - `geometry[input_name]`: set by geometric preprocessing steps (see `Geometry`).
    - `feeds`: the tensors as fed to the engine (decoders may read e.g. an attention mask).
    - `notes`: anything else a step leaves for a later one, keyed by the producing op
      (e.g. a tokenizer's offsets for merging token labels into character spans).
    """

    geometry: dict[str, Geometry] = field(default_factory=dict)
    feeds: dict[str, np.ndarray] | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def image_geometry(self, name: str, image: Any) -> Geometry:
        """The geometry of input `name` so far (identity for the image as given)."""
        current = self.geometry.get(name)
        if current is None:
            current = self.geometry[name] = Geometry.of(np.shape(image))
        return current

    def primary_geometry(self, name: str | None = None) -> Geometry | None:
        """Geometry of input `name`, or of the only image input when `name` is None."""
        if name is not None:
            return self.geometry.get(name)
        if len(self.geometry) == 1:
            return next(iter(self.geometry.values()))
        return None
