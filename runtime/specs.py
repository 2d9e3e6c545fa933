"""Tensor specifications: what a model takes and gives, as plain frozen data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import InputError, ManifestError

#: dtypes a bundle may declare; names are numpy's.
DTYPES = frozenset(
    {"float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64",
     "bool", "string"}
)


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
    def from_dict(cls, data: Any, where: str) -> "QuantParams | None":
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ManifestError(f"{where}.quantization must be an object or null")
        scale, zero = data.get("scale"), data.get("zero_point")
        if not _is_number_list(scale) or not scale:
            raise ManifestError(f"{where}.quantization.scale must be a non-empty list of numbers")
        if not _is_int_list(zero) or len(zero) != len(scale):
            raise ManifestError(
                f"{where}.quantization.zero_point must be a list of integers as long as scale")
        if any(not np.isfinite(s) or s <= 0 for s in scale):
            raise ManifestError(f"{where}.quantization.scale must be finite and positive")
        axis = data.get("axis")
        if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
            raise ManifestError(f"{where}.quantization.axis must be an integer or absent")
        return cls(tuple(float(s) for s in scale), tuple(int(z) for z in zero), axis)


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
        if not isinstance(data, Mapping):
            raise ManifestError(f"{where} must be an object with name, shape and dtype")
        name, shape, dtype = data.get("name"), data.get("shape"), data.get("dtype")
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{where}.name must be a non-empty string")
        if not _is_int_list(shape) or any(d < -1 for d in shape):
            raise ManifestError(f"{where}.shape must be a list of integers (-1 for dynamic)")
        if dtype not in DTYPES:
            raise ManifestError(f"{where}.dtype {dtype!r} is not one of {sorted(DTYPES)}")
        layout = data.get("layout")
        if layout is not None and not isinstance(layout, str):
            raise ManifestError(f"{where}.layout must be a string or null")
        quant = QuantParams.from_dict(data.get("quantization"), where)
        return cls(name, tuple(shape), dtype, layout, quant)

    def check(self, array: np.ndarray) -> None:
        """Raise InputError unless `array` fits this spec (rank, static dims, dtype)."""
        if array.dtype != np.dtype(self.dtype) and self.dtype != "string":
            raise InputError(
                f"input {self.name!r}: expected dtype {self.dtype}, got {array.dtype}; "
                f"convert with array.astype('{self.dtype}') or use predict() to preprocess")
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
