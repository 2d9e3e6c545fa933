"""Tensor steps: scale, normalize, layout, cast, reshape, quantize, dequantize."""
from __future__ import annotations

import numpy as np

from ..specs import DTYPES
from . import Context, Params, register_op


@register_op("scale")
def _scale(p: Params, ctx: Context):
    """x * factor + offset, in float32 (e.g. factor 1/255 maps uint8 pixels to [0, 1])."""
    factor = np.float32(p.number("factor"))
    offset = np.float32(p.number("offset", 0.0))
    return lambda x: np.asarray(x, dtype=np.float32) * factor + offset


@register_op("normalize")
def _normalize(p: Params, ctx: Context):
    """(x - mean) / std per channel along `axis` (default -1: channel-last)."""
    mean, std = p.numbers("mean"), p.numbers("std")
    axis = p.integer("axis", -1)
    if np.any(std == 0):
        raise p.fail("'std' must not contain 0")
    if mean.size != std.size and 1 not in (mean.size, std.size):
        raise p.fail(f"'mean' has {mean.size} values and 'std' {std.size}; give one per channel")
    inv_std = (1.0 / std).astype(np.float32)

    def normalize(x):
        x = np.asarray(x, dtype=np.float32)
        channels = x.shape[axis]
        for name, values in (("mean", mean), ("std", std)):
            if values.size not in (1, channels):
                raise ValueError(f"{name} has {values.size} values for {channels} channels")
        shape = [1] * x.ndim
        shape[axis] = -1
        return (x - mean.reshape(shape)) * inv_std.reshape(shape)
    return normalize


@register_op("layout")
def _layout(p: Params, ctx: Context):
    """Permute named axes, e.g. HWC -> CHW; an N in `to` only adds a batch axis of 1."""
    source, target = p.string("from").upper(), p.string("to").upper()
    for name, text in (("from", source), ("to", target)):
        if len(set(text)) != len(text):
            raise p.fail(f"'{name}' {text!r} repeats an axis letter")
    if set(source) - {"N"} != set(target) - {"N"}:
        raise p.fail(f"cannot map layout {source!r} to {target!r}: the axes differ")
    add_batch = "N" in target and "N" not in source
    drop_batch = "N" in source and "N" not in target
    src = source if not add_batch else "N" + source
    dst = target if not drop_batch else "N" + target
    order = tuple(src.index(axis) for axis in dst)

    def layout(x):
        x = np.asarray(x)
        if x.ndim != len(source):
            raise ValueError(f"layout {source!r} needs {len(source)} dims, got shape {x.shape}")
        if add_batch:
            x = x[None]
        y = np.transpose(x, order)
        if drop_batch:
            if y.shape[0] != 1:
                raise ValueError(f"cannot drop a batch axis of size {y.shape[0]}")
            y = y[0]
        return np.ascontiguousarray(y)
    return layout


@register_op("cast")
def _cast(p: Params, ctx: Context):
    dtype = p.choice("dtype", sorted(DTYPES - {"string"}))
    return lambda x: np.asarray(x).astype(dtype, copy=False)


@register_op("reshape")
def _reshape(p: Params, ctx: Context):
    shape = p.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        raise p.fail("'shape' must be a list of integers (one may be -1)")
    return lambda x: np.reshape(np.asarray(x), shape)


def _quant_params(p: Params, ctx: Context, dtype_default: str):
    """Scale/zero point from the step, else from the tensor spec's quantization."""
    if p.has("scale"):
        scale = p.numbers("scale")
        zero = p.numbers("zero_point", 0)
        dtype = p.choice("dtype", ("int8", "uint8", "int16"), dtype_default)
        axis = p.integer("axis", -1)
        return scale, zero, dtype, axis
    spec = ctx.spec
    if spec is None or spec.quantization is None:
        raise p.fail("give 'scale' and 'zero_point': the tensor spec has no quantization")
    q = spec.quantization
    return (np.asarray(q.scale, np.float32), np.asarray(q.zero_point, np.float32),
            p.choice("dtype", ("int8", "uint8", "int16"), spec.dtype),
            q.axis if q.axis is not None else -1)


def _broadcast(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def quantize_array(x, scale: np.ndarray, zero_point: np.ndarray, dtype: str,
                   axis: int = -1) -> np.ndarray:
    """q = clip(round(x / scale) + zero_point) in the integer dtype (per-tensor or along axis)."""
    x = np.asarray(x, dtype=np.float32)
    info = np.iinfo(dtype)
    q = np.rint(x / _broadcast(scale, x.ndim, axis)) + _broadcast(zero_point, x.ndim, axis)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_array(q, scale: np.ndarray, zero_point: np.ndarray, axis: int = -1) -> np.ndarray:
    """x = (q - zero_point) * scale in float32."""
    q = np.asarray(q)
    return ((q.astype(np.float32) - _broadcast(zero_point, q.ndim, axis))
            * _broadcast(scale, q.ndim, axis))


@register_op("quantize")
def _quantize(p: Params, ctx: Context):
    scale, zero, dtype, axis = _quant_params(p, ctx, "int8")
    return lambda x: quantize_array(x, scale, zero, dtype, axis)


@register_op("dequantize")
def _dequantize(p: Params, ctx: Context):
    scale, zero, _, axis = _quant_params(p, ctx, "int8")
    return lambda q: dequantize_array(q, scale, zero, axis)
