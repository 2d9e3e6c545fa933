"""Tensor specifications: what a model takes and gives, as plain frozen data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from . import schema
from .errors import InputError, ManifestError

#: dtypes a bundle may declare; names are numpy's.
DTYPES = frozenset(
    {"float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64",
     "bool", "string"}
)


_F32_TINY, _F32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
_ZERO_POINT_RANGE = {name: (int(np.iinfo(name).min), int(np.iinfo(name).max))
                     for name in ("int8", "uint8", "int16", "uint16", "int32")}


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization: real = scale * (q - zero_point); per-tensor or along `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"scale": list(self.scale), "zero_point": list(self.zero_point)}
        if self.axis is not None:
            d["axis"] = self.axis
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str, dtype: str | None = None,
                  shape: tuple[int, ...] | None = None) -> "QuantParams | None":
        """Checked through `schema`: scales finite, > 0 and representable in float32,
        zero points within `dtype`'s range, axis within `shape`'s rank and scales per channel."""
        if data is None:
            return None
        at = f"{where}.quantization"
        data = schema.obj(data, at, nullable=True)
        scale = schema.array(data.get("scale"), f"{at}.scale", nonempty=True)
        scales = tuple(schema.number(v, f"{at}.scale[{i}]", lo=_F32_TINY, hi=_F32_MAX,
                                     positive=True) for i, v in enumerate(scale))
        zero = data.get("zero_point")
        if not isinstance(zero, list) or len(zero) != len(scale):
            raise schema.fail(f"{at}.zero_point", "a list of integers as long as scale", zero)
        lo, hi = _ZERO_POINT_RANGE.get(dtype, (-(1 << 31), (1 << 31) - 1))
        zeros = tuple(schema.integer(v, f"{at}.zero_point[{i}]", lo=lo, hi=hi)
                      for i, v in enumerate(zero))
        rank = len(shape) if shape is not None else schema.MAX_RANK
        axis = schema.integer(data.get("axis"), f"{at}.axis", lo=-max(rank, 1),
                              hi=max(rank - 1, 0), nullable=True)
        if axis is not None and shape:
            channels = shape[axis]
            if len(scales) not in (1, channels) and channels != -1:
                raise schema.fail(f"{at}.scale", f"1 or {channels} scales (one per channel "
                                  f"along axis {axis})", f"{len(scales)} scales")
        return cls(scales, zeros, axis)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (-1 for a dynamic dimension), numpy dtype name, layout, quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str | None = None
    quantization: QuantParams | None = None

    @property
    def is_quantized(self) -> bool:
        return self.quantization is not None and self.dtype in ("int8", "uint8", "int16")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "quantization": self.quantization.to_dict() if self.quantization else None,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "TensorSpec":
        """A spec from its manifest object; ManifestError naming `where` (e.g. inputs[0])."""
        if not isinstance(data, Mapping):
            raise schema.fail(where, "an object with name, shape and dtype", data)
        name = schema.string(data.get("name"), f"{where}.name")
        shape = schema.shape(data.get("shape"), f"{where}.shape")
        dtype = schema.string(data.get("dtype"), f"{where}.dtype", choices=DTYPES)
        layout = schema.string(data.get("layout"), f"{where}.layout", nullable=True)
        quant = QuantParams.from_dict(data.get("quantization"), where, dtype, shape)
        return cls(name, shape, dtype, layout, quant)

    def check(self, array: np.ndarray) -> None:
        """Raise InputError unless `array` fits this spec (rank, static dims, dtype)."""
        if array.dtype != np.dtype(self.dtype) and self.dtype != "string":
            if self.is_quantized and array.dtype.kind == "f":
                q = self.quantization
                # astype() would skip the scale and zero point and feed garbage
                fix = (f"quantize it first: q = round(x / scale) + zero_point with scale "
                       f"{list(q.scale)[:4]} and zero_point {list(q.zero_point)[:4]}, clipped "
                       f"to {self.dtype}, or use predict(), which quantizes")
            else:
                fix = f"convert with array.astype('{self.dtype}') or use predict() to preprocess"
            raise InputError(f"input {self.name!r}: expected dtype {self.dtype}, got "
                             f"{array.dtype}; {fix}")
        if array.ndim != len(self.shape) or any(
                want != -1 and want != got for want, got in zip(self.shape, array.shape)):
            raise InputError(
                f"input {self.name!r}: expected shape {format_shape(self.shape)}, "
                f"got {format_shape(array.shape)}")


def example_feeds(specs: Iterable[TensorSpec], *, seed: int = 0, batch: int = 1,
                  examples: Mapping[str, Any] | None = None,
                  assets: Mapping[str, bytes] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs that fit `specs`, for smoke runs, benchmarks and host-vs-device checks.

    `examples` is the manifest's `examples` table (DESIGN §7), per input name:
    `{"value": v}` (a scalar filled into the shape, or a nested list taken as is),
    `{"range": [lo, hi]}` (uniform in the range; integers inclusive), `{"shape": [...]}`
    (concrete dims for the dynamic ones, combinable with value/range), `{"asset": name}`
    (an .npy array stored in the bundle). Without an example: a dynamic first dimension
    becomes `batch`, other dynamic dimensions 1; floats are standard normal; int8/uint8 span
    their full range (quantized data); other integers are zeros, a valid value for
    index-like inputs (token ids, embedding rows); bools are random.
    """
    rng = np.random.default_rng(seed)
    examples = examples or {}
    feeds = {}
    for spec in specs:
        example = examples.get(spec.name) or {}
        shape = _example_shape(spec, example.get("shape"), batch)
        if "asset" in example:
            feeds[spec.name] = _example_asset(spec, example["asset"], assets or {})
            continue
        if spec.dtype == "string":
            feeds[spec.name] = np.full(shape, example.get("value", ""), dtype=object)
            continue
        dtype = np.dtype(spec.dtype)
        if "value" in example or "range" in example:
            feeds[spec.name] = _example_values(spec, example, shape, dtype, rng)
        elif dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        elif dtype in (np.int8, np.uint8):
            info = np.iinfo(dtype)
            feeds[spec.name] = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _example_values(spec: TensorSpec, example: Mapping[str, Any], shape: tuple[int, ...],
                    dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    try:
        if "value" in example:
            value = np.asarray(example["value"], dtype=dtype)
            return value if value.ndim else np.full(shape, value, dtype=dtype)
        lo, hi = example["range"]
        if dtype.kind in "iu":
            return rng.integers(int(lo), int(hi) + 1, shape).astype(dtype)
        return rng.uniform(float(lo), float(hi), shape).astype(dtype)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"examples[{spec.name!r}] {dict(example)} does not give "
                         f"{spec.dtype} values ({e}); fix the bundle's examples") from e


def _example_shape(spec: TensorSpec, given: Any, batch: int) -> tuple[int, ...]:
    if given is not None:
        if not _is_int_list(given) or len(given) != len(spec.shape) or any(
                d != -1 and g != d for g, d in zip(given, spec.shape)) or min(given, default=1) < 0:
            raise InputError(
                f"examples[{spec.name!r}].shape {given} does not fit the input's shape "
                f"{format_shape(spec.shape)}; fix the bundle's examples")
        return tuple(given)
    return tuple((batch if i == 0 else 1) if d == -1 else d for i, d in enumerate(spec.shape))


def _example_asset(spec: TensorSpec, name: Any, assets: Mapping[str, bytes]) -> np.ndarray:
    import io
    if name not in assets:
        raise InputError(f"examples[{spec.name!r}] names asset {name!r}, which the bundle "
                         f"does not have (assets: {sorted(assets) or 'none'})")
    try:
        return np.load(io.BytesIO(assets[name]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"examples[{spec.name!r}]: asset {name!r} is not a .npy array ({e})") from e


def format_shape(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join("?" if d == -1 else str(d) for d in shape) + "]"


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


def _is_number_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
