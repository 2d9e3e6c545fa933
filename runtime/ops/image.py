"""Image steps on HWC (or HW) arrays: resize, center_crop, letterbox, color.

Geometric steps (resize in every aspect mode, center_crop, letterbox) record their transform
in the call's Trace (`trace.geometry[input name]`), so decoders map boxes back to the
source image (see ops/trace.py).

`resize` names the library whose semantics it reproduces, because libraries disagree
(shrinking 480x640 to 224x224, Pillow and OpenCV differ by up to 103/255 on some pixels):
- `reference: "pillow"` (default): Pillow's `Image.resize` (antialiased when shrinking, as
  torchvision's PIL path). Numpy result within 1/255 of Pillow on uint8 images (Pillow rounds
  its intermediate pass to uint8; we do not).
- `reference: "opencv"`: `cv2.resize(..., INTER_LINEAR / INTER_NEAREST)`: half-pixel
  centres, no antialiasing (most C++ pipelines). Within 1/255 of OpenCV on uint8 images.
When the reference library itself is installed and the image is uint8, it is used directly
(several times faster); otherwise the numpy path runs. uint8 in gives uint8 out.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from . import Context, Params, register_op, traced
from .trace import Geometry

_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow "L"


def _as_image(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got {x.shape}")
    return x


@lru_cache(maxsize=64)
def _taps(size_in: int, size_out: int, method: str, reference: str):
    """(indices, weights) of shape (size_out, taps): out[i] = sum_k w[i,k] * in[idx[i,k]]."""
    scale = size_in / size_out
    out = np.arange(size_out, dtype=np.float64)
    if method == "nearest":
        if reference == "pillow":
            # Pillow's affine scaler adds the step to a running double (x0 = scale/2,
            # x += scale): reproduce the accumulation so exact-boundary cases round alike.
            src = np.add.accumulate(np.r_[scale * 0.5, np.full(size_out - 1, scale)])
        else:
            src = out * scale  # OpenCV INTER_NEAREST floors dst * scale
        idx = np.minimum(np.floor(src).astype(np.int64), size_in - 1)[:, None]
        return idx, np.ones_like(idx, dtype=np.float32)
    if reference == "opencv":
        src = np.maximum((out + 0.5) * scale - 0.5, 0.0)
        left = np.floor(src).astype(np.int64)
        frac = src - left
        left = np.minimum(left, size_in - 1)
        right = np.minimum(left + 1, size_in - 1)
        return np.stack([left, right], 1), np.stack([1 - frac, frac], 1).astype(np.float32)
    # Pillow: triangle filter whose support widens with the shrink factor (antialiasing).
    support = max(scale, 1.0)
    centre = (out + 0.5) * scale
    lo = np.maximum(np.floor(centre - support + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.floor(centre + support + 0.5), size_in).astype(np.int64)
    width = int((hi - lo).max())
    idx = lo[:, None] + np.arange(width)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs((idx - centre[:, None] + 0.5) / support))
    weights[idx >= hi[:, None]] = 0.0
    weights /= weights.sum(1, keepdims=True)
    return np.minimum(idx, size_in - 1), weights.astype(np.float32)


def _resample(x: np.ndarray, axis: int, size_out: int, method: str, reference: str):
    idx, w = _taps(x.shape[axis], size_out, method, reference)
    if idx.shape[1] == 1:
        return np.take(x, idx[:, 0], axis=axis)
    # One gather + multiply-add per tap: a few taps over the whole image is much faster
    # than materialising (size_out, taps, ...) and reducing over a middle axis.
    shape = [1] * x.ndim
    shape[axis] = size_out
    out = np.take(x, idx[:, 0], axis=axis) * w[:, 0].reshape(shape)
    for k in range(1, idx.shape[1]):
        out += np.take(x, idx[:, k], axis=axis) * w[:, k].reshape(shape)
    return out


def resize_image(x: np.ndarray, size: tuple[int, int], method: str = "bilinear",
                 reference: str = "pillow", fast: bool = True) -> np.ndarray:
    """Resize an (H, W[, C]) image to size = (height, width)."""
    x = _as_image(x)
    height, width = size
    if x.shape[:2] == (height, width):
        return x
    if fast and x.dtype == np.uint8:
        result = _library_resize(x, size, method, reference)
        if result is not None:
            return result
    source_dtype = x.dtype
    work = x if method == "nearest" else x.astype(np.float32, copy=False)
    work = _resample(_resample(work, 1, width, method, reference), 0, height, method, reference)
    if source_dtype == np.uint8 and work.dtype != np.uint8:
        return np.clip(np.rint(work), 0, 255).astype(np.uint8)
    return work.astype(source_dtype, copy=False) if method == "nearest" else work


def _library_resize(x: np.ndarray, size, method: str, reference: str):
    height, width = size
    if reference == "opencv":
        try:
            import cv2
        except ImportError:
            return None
        flag = cv2.INTER_NEAREST if method == "nearest" else cv2.INTER_LINEAR
        out = cv2.resize(x, (width, height), interpolation=flag)
        return out.reshape(height, width, *x.shape[2:])
    if x.ndim == 3 and x.shape[2] not in (1, 3, 4):
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    flat = x[:, :, 0] if x.ndim == 3 and x.shape[2] == 1 else x
    resample = Image.Resampling.NEAREST if method == "nearest" else Image.Resampling.BILINEAR
    out = np.asarray(Image.fromarray(flat).resize((width, height), resample))
    return out.reshape(height, width, *x.shape[2:])


def fitted_size(shape: tuple[int, ...], size: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) an image of `shape` takes when fit inside `size`, aspect kept.

    As Ultralytics' letterbox: ratio = min(H / h, W / w), sides int(round(side * ratio)),
    at least 1 pixel.
    """
    ratio = min(size[0] / shape[0], size[1] / shape[1])
    return max(1, int(round(shape[0] * ratio))), max(1, int(round(shape[1] * ratio)))


def shorter_side_size(shape: tuple[int, ...], side: int) -> tuple[int, int]:
    """The (height, width) after resizing the shorter side to `side`, aspect kept.

    As torchvision's `Resize(side)`: the longer side becomes int(side * long / short)
    (truncated, not rounded).
    """
    h, w = int(shape[0]), int(shape[1])
    if w <= h:
        return int(side * h / w), side
    return side, int(side * w / h)


def _geometry_name(ctx: Context) -> str:
    return ctx.spec.name if ctx.spec is not None else "image"


@register_op("resize")
def _resize(p: Params, ctx: Context):
    """Resize in one of four aspect modes (geometry recorded for mapping boxes back).

    aspect "stretch" (default): to `size` [H, W] exactly; "shorter": the shorter side to
    `size` N, aspect kept (torchvision `Resize(N)`); "longer" / "fit": fit inside `size`
    ([H, W] or N), aspect kept, no padding (see `letterbox` for padding).
    """
    aspect = p.choice("aspect", ("stretch", "shorter", "longer", "fit"), "stretch")
    if aspect == "shorter":
        side = p.get("size")
        if isinstance(side, bool) or not isinstance(side, int) or side <= 0:
            raise p.fail("aspect 'shorter' takes 'size' as one positive integer (the shorter "
                         f"side), got {side!r}")
        target = lambda shape: shorter_side_size(shape, side)  # noqa: E731
    else:
        size = p.size()
        target = (lambda shape: size) if aspect == "stretch" else \
            (lambda shape: fitted_size(shape, size))
    method = p.choice("method", ("bilinear", "nearest"), "bilinear")
    reference = p.choice("reference", ("pillow", "opencv"), "pillow")
    name = _geometry_name(ctx)

    @traced
    def resize(x, trace):
        x = _as_image(x)
        out_size = target(x.shape)
        geometry = trace.image_geometry(name, x)
        trace.geometry[name] = geometry.resized(*out_size)
        return resize_image(x, out_size, method, reference)
    return resize


def crop_origin(shape: tuple[int, ...], size: tuple[int, int], reference: str) -> tuple[int, int]:
    """(top, left) of a centred crop: "floor" halves the margin down; "torchvision" is
    torchvision's CenterCrop, int(round(margin / 2)) (Python rounding, half to even)."""
    dy, dx = shape[0] - size[0], shape[1] - size[1]
    if reference == "torchvision":
        return int(round(dy / 2.0)), int(round(dx / 2.0))
    return dy // 2, dx // 2


@register_op("center_crop")
def _center_crop(p: Params, ctx: Context):
    height, width = p.size()
    reference = p.choice("reference", ("floor", "torchvision"), "floor")
    name = _geometry_name(ctx)

    @traced
    def crop(x, trace):
        x = _as_image(x)
        if x.shape[0] < height or x.shape[1] < width:
            raise ValueError(f"image {x.shape[:2]} is smaller than the crop {(height, width)}; "
                             "resize first")
        top, left = crop_origin(x.shape, (height, width), reference)
        geometry = trace.image_geometry(name, x)
        trace.geometry[name] = geometry.cropped(top, left, height, width)
        return x[top:top + height, left:left + width]
    return crop


def _pad_value(p: Params) -> np.ndarray:
    value = p.get("value", 114)
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or (
            isinstance(value, list) and value and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))):
        raise p.fail("'value' must be a number or one number per channel")
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise p.fail("'value' must be finite")
    return array


def _canvas(x: np.ndarray, height: int, width: int, value: np.ndarray) -> np.ndarray:
    if value.ndim and x.ndim == 3 and value.size not in (1, x.shape[2]):
        raise ValueError(f"pad value has {value.size} numbers for {x.shape[2]} channels")
    if value.ndim and x.ndim == 2 and value.size != 1:
        raise ValueError(f"pad value has {value.size} numbers for a one-channel image")
    fill = value.reshape(-1)[0] if value.size == 1 else value
    out = np.empty((height, width, *x.shape[2:]), dtype=x.dtype)
    out[...] = np.clip(fill, 0, 255) if x.dtype == np.uint8 else fill
    return out


def _place(x: np.ndarray, height: int, width: int, position: str, value: np.ndarray):
    """x on a (height, width) canvas: returns (canvas, top, left)."""
    dy, dx = height - x.shape[0], width - x.shape[1]
    # Ultralytics: top = round(dh/2 - 0.1), i.e. the odd pixel goes to the bottom/right.
    top, left = (dy // 2, dx // 2) if position == "center" else (0, 0)
    out = _canvas(x, height, width, value)
    out[top:top + x.shape[0], left:left + x.shape[1]] = x
    return out, top, left


def letterbox_image(x: np.ndarray, size: tuple[int, int], value: Any = 114, *,
                    order: str = "resize_then_pad", position: str = "center",
                    method: str = "bilinear", reference: str = "pillow",
                    geometry: Geometry | None = None) -> tuple[np.ndarray, Geometry]:
    """Letterbox an (H, W[, C]) image to `size` (height, width); returns (image, geometry).

    order "resize_then_pad" (Ultralytics): fit inside `size` (`fitted_size`), then pad.
    order "pad_then_resize" (MediaPipe-style): pad the image to the aspect ratio of `size`,
    then resize the padded image, so the pad border is interpolated like the pixels.
    position "center" splits the padding (odd pixel bottom/right), "top_left" pads only
    bottom/right. `geometry` is the transform so far (identity when None).
    """
    x = _as_image(x)
    value = np.asarray(value, dtype=np.float64)
    height, width = size
    g = geometry if geometry is not None else Geometry.of(x.shape)
    if order == "resize_then_pad":
        inner = fitted_size(x.shape, size)
        resized = resize_image(x, inner, method, reference)
        out, top, left = _place(resized, height, width, position, value)
        return out, g.resized(*inner).padded(top, left, height, width)
    h, w = x.shape[0], x.shape[1]
    if h * width >= w * height:   # taller than the target: pad the width
        canvas = (h, max(w, int(round(h * width / height))))
    else:
        canvas = (max(h, int(round(w * height / width))), w)
    padded, top, left = _place(x, canvas[0], canvas[1], position, value)
    out = resize_image(padded, size, method, reference)
    return out, g.padded(top, left, *canvas).resized(height, width)


@register_op("letterbox")
def _letterbox(p: Params, ctx: Context):
    """Fit inside `size` keeping the aspect ratio and pad with `value` (see letterbox_image)."""
    size = p.size()
    value = _pad_value(p)
    order = p.choice("order", ("resize_then_pad", "pad_then_resize"), "resize_then_pad")
    position = p.choice("position", ("center", "top_left"), "center")
    method = p.choice("method", ("bilinear", "nearest"), "bilinear")
    reference = p.choice("reference", ("pillow", "opencv"), "pillow")
    name = _geometry_name(ctx)

    @traced
    def letterbox(x, trace):
        x = _as_image(x)
        out, trace.geometry[name] = letterbox_image(
            x, size, value, order=order, position=position, method=method,
            reference=reference, geometry=trace.image_geometry(name, x))
        return out
    return letterbox


@register_op("color")
def _color(p: Params, ctx: Context):
    """Convert between RGB, BGR and GRAY (HWC, channel last; GRAY keeps a channel axis)."""
    source = p.choice("from", ("RGB", "BGR", "GRAY"), "RGB")
    target = p.choice("to", ("RGB", "BGR", "GRAY"))

    def convert(x):
        x = _as_image(x)
        if x.ndim == 2:
            x = x[:, :, None]
        channels = x.shape[2]
        if source == "GRAY":
            if channels != 1:
                raise ValueError(f"GRAY input must have 1 channel, got {channels}")
            return x if target == "GRAY" else np.repeat(x, 3, axis=2)
        if channels not in (3, 4):
            raise ValueError(f"{source} input must have 3 channels, got {channels}")
        rgb = x[:, :, :3] if source == "RGB" else x[:, :, 2::-1]
        if target == "GRAY":
            gray = rgb.astype(np.float32) @ _GRAY_WEIGHTS
            if x.dtype == np.uint8:
                gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
            return gray[:, :, None]
        return rgb if target == "RGB" else rgb[:, :, ::-1]
    return convert
