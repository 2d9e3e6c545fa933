"""Image steps on HWC (or HW) arrays: resize, center_crop, letterbox, color.

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

import numpy as np

from . import Context, Params, register_op

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


@register_op("resize")
def _resize(p: Params, ctx: Context):
    size = p.size()
    method = p.choice("method", ("bilinear", "nearest"), "bilinear")
    reference = p.choice("reference", ("pillow", "opencv"), "pillow")
    return lambda x: resize_image(x, size, method, reference)


@register_op("center_crop")
def _center_crop(p: Params, ctx: Context):
    height, width = p.size()

    def crop(x):
        x = _as_image(x)
        if x.shape[0] < height or x.shape[1] < width:
            raise ValueError(f"image {x.shape[:2]} is smaller than the crop {(height, width)}; "
                             "resize first")
        top, left = (x.shape[0] - height) // 2, (x.shape[1] - width) // 2
        return x[top:top + height, left:left + width]
    return crop


@register_op("letterbox")
def _letterbox(p: Params, ctx: Context):
    """Resize keeping the aspect ratio to fit `size`, then pad evenly with `value`."""
    height, width = p.size()
    value = p.number("value", 114)
    method = p.choice("method", ("bilinear", "nearest"), "bilinear")
    reference = p.choice("reference", ("pillow", "opencv"), "pillow")

    def letterbox(x):
        x = _as_image(x)
        ratio = min(height / x.shape[0], width / x.shape[1])
        inner = (max(1, round(x.shape[0] * ratio)), max(1, round(x.shape[1] * ratio)))
        resized = resize_image(x, inner, method, reference)
        out = np.full((height, width, *x.shape[2:]), value, dtype=resized.dtype)
        top, left = (height - inner[0]) // 2, (width - inner[1]) // 2
        out[top:top + inner[0], left:left + inner[1]] = resized
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
